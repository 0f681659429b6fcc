import Context
import Foundation
import Machines
import Models
import Snapshots
import StasisCore

extension Session {
    /// Picks the session up after stasis started: a machine still running an idle session is
    /// adopted; a session that stasis left mid-turn or mid-snapshot is brought back from its last
    /// snapshot, its interrupted tool calls are recorded as interrupted (the model is told), and
    /// its turn goes on.
    func recover() async throws {
        switch state {
        case .new, .suspended, .failed, .deleted:
            return
        case .idle:
            if let name = machineName, let alive = try liveMachine(named: name) {
                adopt(alive)
                try await event("recovered", .idle, message: "stasis restarted; the machine was still running")
                await lock.run { scheduleIdleTimerAfterRecovery() }
                return
            }
            try await recoverFromCrash()
        case .snapshotting:
            // Killed mid-suspend. A committed snapshot wins (recoverFromCrash takes it; QEMU was
            // only waiting to quit); otherwise a machine still alive holds the newest state.
            if try newestCommittedSnapshot() == nil, let name = machineName, let alive = try liveMachine(named: name),
               (try? await alive.resumeAfterInterruptedSnapshot()) == true {
                adopt(alive)
                try await event("recovered", .idle, message: "stasis stopped while snapshotting; the machine was still there and runs on")
                await lock.run { scheduleIdleTimerAfterRecovery() }
                return
            }
            try await recoverFromCrash()
        case .booting, .running, .restoring:
            try await recoverFromCrash()
        }
    }

    private func recoverFromCrash() async throws {
        let interruptedState = state
        if let name = machineName, let record = try? environment.machines.find(name) {
            try? await Machine(record: record, store: environment.machines).remove(force: true)
        }
        adopt(nil)
        machineName = nil
        if interruptedState == .snapshotting, let newer = try newestCommittedSnapshot() {
            // The snapshot was committed but stasis stopped before it said so: it is the newest state.
            snapshotID = newer
        }
        let records = try environment.log.records(session: id)
        let openTurn = Self.openTurn(records)
        var message = "stasis stopped while the session was \(interruptedState.rawValue)"
        if let snapshotID {
            message += "; the machine is back from snapshot \(snapshotID)"
            if interruptedState != .snapshotting && interruptedState != .idle {
                message += ", so changes made by this turn's tool calls are gone"
            }
        } else {
            message += "; no snapshot existed, so a new machine will boot"
        }
        try await event("crashed", snapshotID == nil ? .new : .suspended, turn: openTurn, message: message)
        for call in try Transcript.unansweredToolCalls(records) {
            try await append(.toolResult, ToolResultBody(
                id: call.id, name: call.name,
                content: "interrupted: stasis stopped while this tool call ran; the machine was restored from the last snapshot, "
                    + "taken before this turn, so this call's effects and those of earlier calls in this turn are gone",
                isError: true, interrupted: true))
        }
        let afterInterruption = try environment.log.records(session: id)
        for call in try Transcript.pendingToolCalls(afterInterruption) {
            try await append(.toolResult, ToolResultBody(
                id: call.id, name: call.name, content: "not run: stasis stopped before this tool call started", isError: true,
                interrupted: true))
        }
        guard let openTurn else { return }
        Task { await self.continueTurn(openTurn) }
    }

    /// Runs the rest of a turn that a crash cut short.
    private func continueTurn(_ turn: String) async {
        await lock.run {
            do {
                try await ensureMachine()
                try await event("turnStarted", .running, turn: turn, message: "resumed after a crash")
                try await modelLoop(turn: turn)
            } catch {
                _ = try? await event("turnEnded", machine == nil ? state : .idle, turn: turn, message: "turn failed: \(error)")
            }
            scheduleIdleTimerAfterRecovery()
        }
    }

    /// The turn of the last user message if no `turnEnded` record follows it.
    static func openTurn(_ records: [ContextRecord]) -> String? {
        guard let lastUser = records.last(where: { $0.kind == .userMessage }),
              let message = try? lastUser.decodeBody(UserMessageBody.self)
        else { return nil }
        let ended = records.contains { record in
            record.seq > lastUser.seq && record.kind == .system
                && (try? record.decodeBody(SystemEventBody.self))?.event == "turnEnded"
        }
        return ended ? nil : message.turn
    }

    private func liveMachine(named name: String) throws -> Machine? {
        guard let record = try? environment.machines.find(name) else { return nil }
        let current = try environment.machines.reconcile(record)
        guard current.state == .running else { return nil }
        return Machine(record: current, store: environment.machines)
    }

    /// A snapshot of this session committed after the one the log names.
    private func newestCommittedSnapshot() throws -> String? {
        let mine = try environment.snapshotter.snapshots.list().filter { $0.tag == "session-\(id)" }
        guard let newest = mine.max(by: { $0.created < $1.created }) else { return nil }
        if let snapshotID, let known = mine.first(where: { $0.id == snapshotID }), known.created >= newest.created {
            return nil
        }
        return newest.id
    }
}
