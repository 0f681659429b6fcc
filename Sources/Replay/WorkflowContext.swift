import Foundation
import StasisCore

/// What a workflow calls to run journaled steps, sleep durably and continue as new. One per run execution.
public actor WorkflowContext {
    /// The workflow id, stable across `continueAsNew`.
    public nonisolated let workflowID: String
    /// The run number: 1, then one more after each `continueAsNew`.
    public nonisolated let run: Int
    /// Whether this execution started with journaled history (a resume, not a first run).
    public nonisolated let isReplaying: Bool

    private let journal: Journal
    private let limits: HistoryLimits
    private let onWarning: @Sendable (HistoryWarning) -> Void
    private var history: [JournalEvent]
    private var seq = 0
    private var bytes: Int
    private var warned = false
    /// An error that must end the run whatever the workflow does with it (non-determinism, history limit).
    private(set) var fatal: (error: StasisError, nondeterminism: Bool)?

    init(workflowID: String, run: Int, history: [JournalEvent], journal: Journal, limits: HistoryLimits,
         onWarning: @escaping @Sendable (HistoryWarning) -> Void) {
        self.workflowID = workflowID
        self.run = run
        self.history = history
        self.isReplaying = !history.isEmpty
        self.journal = journal
        self.limits = limits
        self.onWarning = onWarning
        self.bytes = history.reduce(0) { $0 + $1.payload.utf8.count }
    }

    /// Runs `body` once and journals its result; on re-execution returns the journaled result without running it.
    /// At-least-once: if the process dies after `body` but before the journal write, `body` runs again.
    public func step<T: Codable & Sendable>(_ name: String, _ body: @Sendable () async throws -> T) async throws -> T {
        if let event = try replay(.step, name) { return try decode(T.self, event) }
        let value = try await body()
        try journalStep(name, value)
        return value
    }

    /// Like `step(_:_:)`, and hands `body` a key that is the same on every re-execution, so that a receiver
    /// that deduplicates by key makes the effect happen exactly once.
    public func step<T: Codable & Sendable>(
        _ name: String, idempotencyKey source: IdempotencyKey.Source, _ body: @Sendable (IdempotencyKey) async throws -> T
    ) async throws -> T {
        if let event = try replay(.step, name) { return try decode(T.self, event) }
        let key: IdempotencyKey
        switch source {
        case .derived: key = IdempotencyKey("\(workflowID)/\(run)/\(seq)")
        case .custom(let text): key = IdempotencyKey(text)
        }
        let value = try await body(key)
        try journalStep(name, value)
        return value
    }

    /// Sleeps durably: the wake-up time is journaled, so after a restart only the rest is slept.
    public func sleep(for duration: Duration) async throws {
        let wake: Date
        if let event = try replay(.sleep, "sleep") {
            wake = try decode(SleepPayload.self, event).wake
        } else {
            let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
            wake = Date().addingTimeInterval(seconds)
            try append(.sleep, "sleep", try encode(SleepPayload(wake: wake)))
        }
        let remaining = wake.timeIntervalSinceNow
        if remaining > 0 { try await Task.sleep(for: .seconds(remaining)) }
    }

    /// Ends this run and starts a fresh, empty history for the same workflow id with `input`.
    public func continueAsNew<Input: Encodable & Sendable>(_ input: Input) async throws -> Never {
        seq += 1
        throw ContinueAsNewRequest(seq: seq, input: try encode(input))
    }

    /// Throws a non-determinism error if the journal holds events the code did not ask for.
    func checkConsumed() throws {
        guard seq < history.count else { return }
        let event = history[seq]
        throw nondeterminism(position: seq + 1, journaled: Self.describe(event.kind, event.step), asked: "the workflow to return")
    }

    private struct SleepPayload: Codable { let wake: Date }

    private func replay(_ kind: JournalEvent.Kind, _ name: String) throws -> JournalEvent? {
        if let fatal { throw fatal.error }
        seq += 1
        guard seq <= history.count else { return nil }
        let event = history[seq - 1]
        guard event.kind == kind, event.step == name else {
            throw nondeterminism(position: seq, journaled: Self.describe(event.kind, event.step), asked: Self.describe(kind, name))
        }
        return event
    }

    private func nondeterminism(position: Int, journaled: String, asked: String) -> StasisError {
        let error = StasisError(
            .invalidState,
            "non-determinism in workflow \"\(workflowID)\" run \(run) at position \(position): the journal has \(journaled) there, "
                + "but the code asked for \(asked); the workflow's code changed its steps' names or order since this run started")
        fatal = (error, true)
        return error
    }

    private static func describe(_ kind: JournalEvent.Kind, _ name: String) -> String {
        switch kind {
        case .step: "step \"\(name)\""
        case .sleep: "a sleep"
        case .continuedAsNew: "continueAsNew"
        }
    }

    private func journalStep<T: Encodable>(_ name: String, _ value: T) throws {
        try append(.step, name, try encode(value))
    }

    private func append(_ kind: JournalEvent.Kind, _ name: String, _ payload: String) throws {
        let newBytes = bytes + payload.utf8.count
        if seq > limits.maxEvents || newBytes > limits.maxBytes {
            let error = StasisError(
                .invalidState,
                "workflow \"\(workflowID)\" run \(run) exceeded its history limit at \(Self.describe(kind, name)) (position \(seq)): "
                    + "\(seq) events / \(newBytes) bytes, limit \(limits.maxEvents) events / \(limits.maxBytes) bytes; "
                    + "call continueAsNew before the limit to start a fresh history")
            fatal = (error, false)
            throw error
        }
        let event = JournalEvent(
            workflowID: workflowID, run: run, seq: seq, kind: kind, step: name, payload: payload, time: Date(),
            checksum: JournalEvent.checksum(workflowID: workflowID, run: run, seq: seq, kind: kind, step: name, payload: payload))
        try journal.append(event)
        history.append(event)
        bytes = newBytes
        if !warned, seq >= limits.warnEvents || bytes >= limits.warnBytes {
            warned = true
            onWarning(HistoryWarning(workflowID: workflowID, run: run, events: seq, bytes: bytes, limits: limits))
        }
    }

    private func encode<T: Encodable>(_ value: T) throws -> String {
        do { return try JSONCoding.encode(value) } catch {
            throw StasisError(.invalidArgument, "workflow \"\(workflowID)\": cannot encode the value at position \(seq) as JSON", cause: error)
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, _ event: JournalEvent) throws -> T {
        do { return try JSONCoding.decode(type, event.payload) } catch {
            throw StasisError(
                .corrupted, "workflow \"\(workflowID)\": the journaled result of step \"\(event.step)\" at position \(event.seq) is not a \(T.self)",
                cause: error)
        }
    }
}
