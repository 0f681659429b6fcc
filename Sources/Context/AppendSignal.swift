import Synchronization

/// Wakes tailing readers when records are appended to a session. A reader takes the session's
/// generation before it reads, and waits for a later one, so an append between the read and the
/// wait is never missed.
final class AppendSignal: Sendable {
    private struct SessionState {
        var generation: UInt64 = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private struct State {
        var sessions: [String: SessionState] = [:]
        var nextWaiterID = 0
    }

    private let state = Mutex(State())

    /// The session's current generation.
    func generation(_ session: String) -> UInt64 {
        state.withLock { $0.sessions[session]?.generation ?? 0 }
    }

    /// Returns once the session's generation is past `generation`, or the task is cancelled.
    func wait(_ session: String, after generation: UInt64) async {
        let id = state.withLock { state -> Int in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    let current = state.sessions[session, default: SessionState()]
                    if current.generation > generation || Task.isCancelled { return true }
                    state.sessions[session, default: SessionState()].waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.sessions[session]?.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }

    /// Like `wait`, but gives up at `deadline`; returns whether an append came.
    func wait(_ session: String, after generation: UInt64, until deadline: ContinuousClock.Instant) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.wait(session, after: generation)
                return !Task.isCancelled
            }
            group.addTask {
                try? await Task.sleep(until: deadline)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first && self.generation(session) > generation
        }
    }

    /// Moves each session's generation on and wakes its waiters.
    func signal(_ sessions: some Sequence<String>) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            var woken: [CheckedContinuation<Void, Never>] = []
            for session in Set(sessions) {
                var entry = state.sessions[session, default: SessionState()]
                entry.generation += 1
                woken += entry.waiters.values
                entry.waiters = [:]
                state.sessions[session] = entry
            }
            return woken
        }
        for continuation in woken { continuation.resume() }
    }
}
