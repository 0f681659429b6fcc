import Foundation
@testable import Replay

/// A fresh journal path in a temporary folder.
func temporaryDatabase() -> URL {
    FileManager.default.temporaryDirectory
        .appendingPathComponent("replay-tests-\(UUID().uuidString)")
        .appendingPathComponent("journal.sqlite")
}

/// A value shared between a test and the closures it hands the engine.
final class Shared<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func update<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }

    var current: Value { update { $0 } }
}
