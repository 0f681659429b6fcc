import Synchronization

/// Counts snapshots being taken whose id no session holds yet. The snapshot sweep waits for a
/// moment when there are none: a snapshot committed but not yet recorded by its session must not
/// look unneeded.
final class SnapshotsInFlight: Sendable {
    private let count = Mutex(0)

    /// Whether a snapshot is being taken right now.
    var busy: Bool { count.withLock { $0 > 0 } }

    /// Runs `body` (which takes a snapshot and records its id) counted as in flight.
    func during<T>(isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T) async rethrows -> T {
        count.withLock { $0 += 1 }
        defer { count.withLock { $0 -= 1 } }
        return try await body()
    }
}
