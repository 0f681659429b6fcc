import Foundation

/// Runs blocking work (file I/O, compression, fsync) on a thread of its own and awaits it, so it
/// never holds one of the few threads of Swift concurrency's cooperative pool.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
