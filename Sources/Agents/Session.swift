import Context
import Foundation
import Logging
import Machines
import Models
import Snapshots
import StasisCore
import Synchronization

/// One agent session: its log, its machine and the turn loop between them. Everything that
/// touches the machine runs under one FIFO lock, so two messages are answered one after the
/// other and a session never runs on two machines. Every transition is a system record.
public actor Session {
    /// The session id.
    public nonisolated let id: String
    /// How the session was set up.
    public nonisolated let configuration: SessionConfiguration
    /// The session it was forked from.
    public nonisolated let parent: String?

    /// Where the session is in its life.
    public private(set) var state: SessionState
    var machine: Machine?
    var machineName: String?
    /// The last committed snapshot of the session's machine.
    public internal(set) var snapshotID: String?
    /// Snapshots taken as turns ended, by turn id: the points the session can be forked at.
    public internal(set) var checkpoints: [String: String] = [:]

    let environment: SessionEnvironment
    let model: any ModelProvider
    let tools: ToolRunner
    let lock = SerialLock()
    /// Called when a snapshot of this session stopped being its newest: the manager deletes the
    /// snapshots no session needs any more.
    let snapshotsChanged: @Sendable () async -> Void
    private var idleTimer: Task<Void, Never>?
    private var pendingTurns: [PendingTurn] = []
    private var turnWorker: Task<Void, Never>?
    /// The log as read so far, for the model's transcript; records are never changed, so only
    /// what comes after the last one needs reading.
    private var cachedRecords: [ContextRecord] = []
    private let listed = Mutex(true)
    private var idleGeneration = 0

    init(id: String, configuration: SessionConfiguration, parent: String?, state: SessionState, machineName: String?,
         snapshotID: String?, checkpoints: [String: String] = [:], environment: SessionEnvironment,
         snapshotsChanged: @escaping @Sendable () async -> Void) throws {
        self.checkpoints = checkpoints
        self.id = id
        self.configuration = configuration
        self.parent = parent
        self.state = state
        self.machineName = machineName
        self.snapshotID = snapshotID
        self.environment = environment
        self.model = try environment.makeModel(configuration.model)
        self.tools = ToolRunner(shellTimeoutSeconds: configuration.shellTimeoutSeconds, outputLimitBytes: configuration.outputLimitBytes)
        self.snapshotsChanged = snapshotsChanged
    }

    /// Whether the manager still lists the session (false once deleted).
    nonisolated var isListed: Bool { listed.withLock { $0 } }

    nonisolated func unlist() { listed.withLock { $0 = false } }

    /// What a client sees of the session now.
    public func info() throws -> SessionInfo {
        SessionInfo(id: id, state: state, configuration: configuration, machine: machineName, snapshot: snapshotID,
                    lastSeq: try environment.log.lastSeq(session: id), parent: parent)
    }

    // MARK: Turns

    /// Queues a user message; its turn runs after every earlier one. Returns the turn id, which
    /// the message record and the turn's `turnEnded` record carry.
    public func send(_ text: String) throws -> String {
        let turn = try newTurn(text)
        enqueue(PendingTurn(text: text, turn: turn, done: nil))
        return turn
    }

    /// Sends a message and returns when its turn has ended.
    public func sendAndWait(_ text: String) async throws -> String {
        let turn = try newTurn(text)
        await withCheckedContinuation { done in enqueue(PendingTurn(text: text, turn: turn, done: done)) }
        return turn
    }

    private struct PendingTurn {
        let text: String
        let turn: String
        let done: CheckedContinuation<Void, Never>?
    }

    private func newTurn(_ text: String) throws -> String {
        guard state != .deleted else { throw StasisError(.notFound, "session \(id) was deleted") }
        guard !text.isEmpty else { throw StasisError(.invalidArgument, "the message is empty") }
        return UUID().uuidString.lowercased()
    }

    /// Messages wait here in the order they came: the queue is filled synchronously on the actor,
    /// so two messages sent one after the other are answered in that order.
    private func enqueue(_ pending: PendingTurn) {
        pendingTurns.append(pending)
        guard turnWorker == nil else { return }
        turnWorker = Task { await self.drainTurns() }
    }

    private func drainTurns() async {
        while !pendingTurns.isEmpty {
            let next = pendingTurns.removeFirst()
            await runTurn(text: next.text, turn: next.turn)
            next.done?.resume()
        }
        turnWorker = nil
    }

    private func runTurn(text: String, turn: String) async {
        await lock.run {
            guard state != .deleted else { return }
            cancelIdleTimer()
            do {
                try await append(.userMessage, UserMessageBody(text: text, turn: turn))
                try await ensureMachine()
                try await event("turnStarted", .running, turn: turn)
                try await modelLoop(turn: turn)
                await checkpoint(turn: turn)
            } catch {
                await turnFailed(turn: turn, error)
            }
            scheduleIdleTimer()
        }
    }

    /// Model call → tool calls → results, until the model answers without calling a tool.
    func modelLoop(turn: String) async throws {
        for _ in 0 ..< configuration.maxModelCallsPerTurn {
            let records = try conversation()
            let request = ModelRequest(
                messages: try Transcript.messages(records, systemPrompt: configuration.systemPrompt), tools: ToolRunner.specs)
            let reply = try await model.complete(request)
            try await append(.assistantMessage, AssistantMessageBody(
                text: reply.message.content, toolCalls: reply.message.toolCalls, stopReason: reply.stopReason, usage: reply.usage))
            if reply.message.toolCalls.isEmpty {
                try await event("turnEnded", .idle, turn: turn)
                return
            }
            try await runToolCalls(reply.message.toolCalls)
        }
        try await event("turnEnded", .idle, turn: turn,
                        message: "stopped after \(configuration.maxModelCallsPerTurn) model calls in one turn")
    }

    /// The session's records, read from the log once and then only what was appended since:
    /// re-reading a long session's whole log before every model call would make it quadratic.
    private func conversation() throws -> [ContextRecord] {
        let newer = try environment.log.records(session: id, after: cachedRecords.last?.seq ?? 0)
        cachedRecords += newer
        return cachedRecords
    }

    private func runToolCalls(_ calls: [ToolCall]) async throws {
        for call in calls {
            guard let machine else { throw StasisError(.invalidState, "session \(id) has no machine") }
            try await append(.toolCall, ToolCallBody(id: call.id, name: call.name, arguments: call.arguments))
            let result = try await tools.run(call, in: machine)
            try await append(.toolResult, result)
        }
    }

    /// A turn that could not finish: the log says why, and the session stays usable when it can.
    private func turnFailed(turn: String, _ error: any Error) async {
        environment.logger.error("session \(id): turn failed: \(error)")
        // Calls the model asked for that never ran get a result, so the next model call is valid.
        if let records = try? environment.log.records(session: id),
           let pending = try? Transcript.pendingToolCalls(records) {
            for call in pending {
                _ = try? await append(.toolResult, ToolResultBody(
                    id: call.id, name: call.name, content: "not run: the turn failed (\(error))", isError: true))
            }
        }
        if let machine, await !isMachineAlive(machine) {
            // The machine died under the turn: fall back to the last snapshot on the next message.
            _ = try? await machine.remove(force: true)
            self.machine = nil
            self.machineName = nil
            _ = try? await event("crashed", snapshotID == nil ? .new : .suspended, turn: turn,
                                 message: "the machine stopped during the turn: \(error)")
            _ = try? await event("turnEnded", snapshotID == nil ? .new : .suspended, turn: turn, message: "\(error)")
            return
        }
        _ = try? await event("turnEnded", machine == nil ? state : .idle, turn: turn, message: "turn failed: \(error)")
    }

    // MARK: Machine

    /// Boots or restores the session's machine if it has none.
    func ensureMachine() async throws {
        if let machine, await isMachineAlive(machine) { return }
        if let snapshotID {
            try await restore(snapshotID)
        } else {
            try await boot()
        }
    }

    private func boot() async throws {
        try await event("booting", .booting)
        let clock = ContinuousClock()
        let start = clock.now
        let machine: Machine
        do {
            machine = try await startMachine()
        } catch {
            _ = try? await event("failed", .new, message: "the machine did not boot: \(error)")
            throw error
        }
        self.machine = machine
        self.machineName = await machine.name
        try await event("booted", .idle, milliseconds: (clock.now - start).milliseconds)
    }

    /// The session's first machine: restored from the image's boot snapshot (warm start), so it
    /// starts in restore time and its snapshots share the image's frames; booted otherwise.
    private func startMachine() async throws -> Machine {
        let spec = configuration.machineSpec
        let name = "session-\(id)"
        if WarmStart.applies(to: spec) {
            let (snapshot, _) = try await WarmStart(snapshotter: environment.snapshotter).bootSnapshot(for: spec, bootTimeout: .seconds(120))
            return try await WarmStart(snapshotter: environment.snapshotter).restore(snapshot, name: name, ports: spec.ports)
        }
        let store = environment.machines
        let machine = Machine(record: try store.create(name: name, spec: spec, autoRemove: false), store: store)
        do {
            _ = try await machine.boot(try await BootArtifacts.resolve(home: environment.home, image: configuration.image))
        } catch {
            try? await machine.remove(force: true)
            throw error
        }
        return machine
    }

    private func restore(_ snapshot: String) async throws {
        try await event("restoring", .restoring)
        let clock = ContinuousClock()
        let start = clock.now
        let restored: Machine
        do {
            restored = try await environment.snapshotter.restore(snapshot, name: "session-\(id)", ports: configuration.ports)
        } catch {
            _ = try? await event("failed", .suspended, message: "snapshot \(snapshot) did not restore: \(error)")
            throw error
        }
        machine = restored
        machineName = await restored.name
        try await event("restored", .idle, milliseconds: (clock.now - start).milliseconds)
    }

    private func isMachineAlive(_ machine: Machine) async -> Bool {
        guard let record = try? await machine.refresh() else { return false }
        return record.state == .running
    }

    // MARK: Idle and suspend

    /// Starts the idle timer after recovery (the same timer a finished turn starts).
    func scheduleIdleTimerAfterRecovery() { scheduleIdleTimer() }

    private func scheduleIdleTimer() {
        guard state == .idle, machine != nil else { return }
        idleGeneration += 1
        let generation = idleGeneration
        let seconds = configuration.idleTimeoutSeconds
        idleTimer = Task { [weak self] in
            // A timer, not synchronization: the session sleeps until its idle timeout.
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            guard !Task.isCancelled else { return }
            await self?.idleTimeoutFired(generation)
        }
    }

    private func cancelIdleTimer() {
        idleGeneration += 1
        idleTimer?.cancel()
        idleTimer = nil
    }

    private func idleTimeoutFired(_ generation: Int) async {
        guard generation == idleGeneration else { return }
        // This runs in the timer's task: forget it rather than let suspend() cancel it, or the
        // cancellation would reach the snapshot's child processes.
        idleTimer = nil
        do { try await suspend() } catch {
            environment.logger.error("session \(id): suspend after idle timeout failed: \(error)")
        }
    }

    /// Snapshots the machine and stops it; the session then lives on disk only.
    public func suspend() async throws {
        try await lock.run {
            cancelIdleTimer()
            guard let machine, state == .idle else { return }
            try await event("snapshotting", .snapshotting)
            let clock = ContinuousClock()
            let start = clock.now
            let previous = snapshotID
            let manifest: SnapshotManifest
            do {
                manifest = try await environment.snapshotsInFlight.during {
                    let taken = try await environment.snapshotter.take(machine, tag: "session-\(id)", leaveRunning: false)
                    snapshotID = taken.id
                    return taken
                }
            } catch {
                // No new timer: a failing snapshot is not retried in a loop; the next turn arms it again.
                _ = try? await event("failed", .idle, message: "snapshot failed, the machine keeps running: \(error)")
                throw error
            }
            try await machine.remove(force: true)
            self.machine = nil
            machineName = nil
            // What this suspend added to the disk: its device state, its disk layer, its new RAM frames.
            let bytes = manifest.stateStoredBytes + manifest.disk.allocated + UInt64(manifest.memoryAddedBytes ?? 0)
            try await event("suspended", .suspended, snapshotBytes: bytes, milliseconds: (clock.now - start).milliseconds)
            if previous != nil { await snapshotsChanged() }
        }
    }

    /// Restores a suspended session's machine without a message (the idle timer then runs again).
    public func resume() async throws {
        try await lock.run {
            guard state != .deleted else { throw StasisError(.notFound, "session \(id) was deleted") }
            cancelIdleTimer()
            try await ensureMachine()
            scheduleIdleTimer()
        }
    }

    // MARK: Turn snapshots

    /// Snapshots the machine as the turn left it, leaving it running (the guest pauses for the
    /// RAM copy only), and records the snapshot in a `checkpointed` record. A failure is
    /// recorded and otherwise ignored: the turn itself has ended.
    private func checkpoint(turn: String) async {
        guard configuration.snapshotsEveryTurn, let machine, await isMachineAlive(machine) else { return }
        let clock = ContinuousClock()
        let start = clock.now
        do {
            let manifest = try await environment.snapshotsInFlight.during {
                let taken = try await environment.snapshotter.take(machine, tag: "session-\(id)-turn", leaveRunning: true)
                checkpoints[turn] = taken.id
                return taken
            }
            let bytes = manifest.stateStoredBytes + manifest.disk.allocated + UInt64(manifest.memoryAddedBytes ?? 0)
            try await event("checkpointed", .idle, turn: turn, snapshotBytes: bytes, milliseconds: (clock.now - start).milliseconds,
                            checkpoint: manifest.id)
        } catch {
            environment.logger.error("session \(id): turn snapshot failed: \(error)")
            _ = try? await event("failed", .idle, turn: turn, message: "the turn's snapshot failed (the session goes on; it cannot be forked at this turn): \(error)")
        }
    }

    /// Where the session stood when its `number`-th turn (1-based, counting turns it inherited
    /// from a parent) ended: that turn's snapshot and the sequence number of its record.
    func checkpoint(atTurn number: Int) async throws -> (snapshot: String, seq: Int64) {
        try await lock.run {
            let records = try environment.log.records(session: id)
            let turns = records.filter { $0.kind == .userMessage }.compactMap { try? $0.decodeBody(UserMessageBody.self).turn }
            guard number >= 1, number <= turns.count else {
                throw StasisError(.invalidArgument, "session \(id) has \(turns.count) turns; give a turn from 1 to \(turns.count)")
            }
            let turn = turns[number - 1]
            for record in records where record.kind == .system {
                guard let body = try? record.decodeBody(SystemEventBody.self), body.event == "checkpointed", body.turn == turn,
                      let snapshot = body.checkpoint else { continue }
                return (snapshot, record.seq)
            }
            let ranHere = records.contains { $0.kind == .system && (try? $0.decodeBody(SystemEventBody.self))?.turn == turn }
            if !ranHere, let parent {
                throw StasisError(.notFound, "turn \(number) of session \(id) ran in session \(parent) before the fork: fork that session at this turn")
            }
            throw StasisError(.notFound, "turn \(number) of session \(id) has no snapshot (it failed, is still running, or the session keeps no turn snapshots): `stasis session attach \(id)` shows its turns")
        }
    }

    // MARK: Fork and delete

    /// A snapshot of the session as it is now, for a fork: a running machine is snapshotted and
    /// goes on; a suspended session gives its last snapshot.
    func snapshotForFork(tag: String) async throws -> (snapshot: String?, seq: Int64) {
        try await lock.run {
            let seq = try environment.log.lastSeq(session: id)
            guard let machine, await isMachineAlive(machine) else { return (snapshotID, seq) }
            let manifest = try await environment.snapshotter.take(machine, tag: tag, leaveRunning: true)
            return (manifest.id, seq)
        }
    }

    /// Stops the machine, deletes the snapshots no other session uses, and marks the session deleted.
    func delete() async throws {
        try await lock.run {
            cancelIdleTimer()
            if let machine { try? await machine.remove(force: true) }
            machine = nil
            machineName = nil
            snapshotID = nil
            try await event("deleted", .deleted)
        }
    }

    /// Stops the idle timer; with `suspending`, snapshots an idle machine first (a clean shutdown).
    func shutdown(suspending: Bool) async {
        if suspending, state == .idle, machine != nil {
            do { try await suspend() } catch {
                environment.logger.error("session \(id): could not suspend at shutdown: \(error)")
            }
        }
        cancelIdleTimer()
    }

    // MARK: Log

    @discardableResult
    func append<T: Encodable>(_ kind: RecordKind, _ body: T) async throws -> ContextRecord {
        // Encode here, in the actor: only the finished record crosses to the log's writer.
        try await environment.log.append(NewRecord(session: id, kind: kind, value: body))
    }

    /// Appends a system record and moves to `state`. Every system record carries the session's
    /// current machine and snapshot, so the last one is enough to pick the session up again.
    @discardableResult
    func event(_ name: String, _ state: SessionState, turn: String? = nil, snapshotBytes: UInt64? = nil,
               milliseconds: Double? = nil, message: String? = nil, checkpoint: String? = nil) async throws -> ContextRecord {
        self.state = state
        return try await append(.system, SystemEventBody(
            name, state: state, machine: machineName, snapshot: snapshotID, snapshotBytes: snapshotBytes,
            milliseconds: milliseconds, turn: turn, message: message, checkpoint: checkpoint))
    }

    /// Adopts a machine found alive at start-up.
    func adopt(_ machine: Machine?) {
        self.machine = machine
    }
}
