import Dispatch
import GRDB
import Synchronization

/// Commits concurrent appends together: while one transaction is being written and fsynced, new
/// appends queue up and go into the next one. With one writer this is a plain append; with many
/// it turns N fsyncs into one.
final class GroupCommitter: Sendable {
    private struct Pending {
        let record: NewRecord
        let continuation: CheckedContinuation<ContextRecord, any Error>
    }

    private struct State {
        var queue: [Pending] = []
        var writing = false
    }

    private let state = Mutex(State())
    // SQLite writes block their thread; keep them off Swift's cooperative pool.
    private let writer = DispatchQueue(label: "stasis.context.group-commit")

    /// Queues `record`, and returns it once it is committed.
    func submit(_ record: NewRecord, to log: ContextLog) async throws -> ContextRecord {
        try await withCheckedThrowingContinuation { continuation in
            let startWriter = state.withLock { state -> Bool in
                state.queue.append(Pending(record: record, continuation: continuation))
                guard !state.writing else { return false }
                state.writing = true
                return true
            }
            if startWriter { writer.async { self.drain(log) } }
        }
    }

    private func drain(_ log: ContextLog) {
        while true {
            let batch = state.withLock { state -> [Pending] in
                let batch = state.queue
                state.queue = []
                if batch.isEmpty { state.writing = false }
                return batch
            }
            if batch.isEmpty { return }
            commit(batch, to: log)
        }
    }

    private func commit(_ batch: [Pending], to log: ContextLog) {
        do {
            let written = try log.wrap("append \(batch.count) records") {
                try log.db.write { db in try ContextLog.insert(batch.map(\.record), into: db) }
            }
            log.signal.signal(batch.map(\.record.session))
            for (pending, record) in zip(batch, written) { pending.continuation.resume(returning: record) }
        } catch {
            // One bad record (an empty session id, a damaged tail) must not fail the others: retry
            // them one by one so each caller gets its own answer.
            guard batch.count > 1 else {
                batch[0].continuation.resume(throwing: error)
                return
            }
            for pending in batch { commit([pending], to: log) }
        }
    }
}
