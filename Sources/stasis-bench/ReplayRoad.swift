import Agents
import Foundation
import Replay
import StasisCore
import Synchronization

/// The agent loop as a Replay workflow (`ReplayAgent`), journaled in its own SQLite file: built
/// once to turn N, then resumed by fresh engines.
struct ReplayRoad {
    static let workflowName = "agent"
    static let workflowID = "agent"

    let database: URL
    let turns: Int
    let toolBytes: Int
    let contextTurns: Int?

    /// The original run of N turns.
    struct Build: Encodable {
        /// Wall time of the run, ms.
        var wallMs: Double
        /// CPU of this process (all threads) during the run, ms.
        var cpuMs: Double
        /// Time inside the step bodies (model replies, tool), ms.
        var bodyMs: Double
        /// Journaled events (steps).
        var events: Int
        /// Their payload bytes, as the history limits count them.
        var payloadBytes: Int
        /// The event count at which the history warning fired, if it did.
        var warnedAtEvents: Int?

        /// µs per step outside the bodies: journal writes, JSON, the engine.
        var stepOverheadMicros: Double { events == 0 ? .nan : (wallMs - bodyMs) * 1000 / Double(events) }
    }

    private var stopMessage: String { AgentScript.userMessage(turn: turns + 1) }

    private func agent(gate: InterruptGate, clock: BodyClock) -> ReplayAgent {
        ReplayAgent(model: GatedModel(gate: gate, clock: clock), tools: AgentScript.tools, systemPrompt: AgentScript.systemPrompt,
                    contextTurns: contextTurns, runTool: AgentScript.tool(size: toolBytes, clock: clock))
    }

    /// Runs a new workflow of N + 1 turns and stops it at turn N + 1's first model call: N turns journaled.
    func build() async throws -> Build {
        let warned = Mutex<Int?>(nil)
        let engine = try WorkflowEngine(databaseURL: database) { warning in
            warned.withLock { if $0 == nil { $0 = warning.events } }
        }
        let gate = InterruptGate(stopMessage: stopMessage)
        let clock = BodyClock()
        await agent(gate: gate, clock: clock).register(on: engine, as: Self.workflowName)
        let input = ReplayAgentInput(messages: AgentScript.messages(turns: turns + 1))
        let cpu0 = CPUTime.processUsage().own
        let t0 = ContinuousClock.now
        do {
            _ = try await engine.run(Self.workflowName, id: Self.workflowID, input: input, as: ReplayAgentOutput.self)
            throw StasisError(.internalError, "the replay workflow ended without reaching turn \(turns + 1)")
        } catch is CancellationError {}
        let wall = (ContinuousClock.now - t0).milliseconds
        let cpu = CPUTime.processUsage().own - cpu0
        guard gate.firedAt != nil else { throw StasisError(.internalError, "the replay workflow never reached turn \(turns + 1)") }
        let history = try await engine.history(of: Self.workflowID)
        return Build(wallMs: wall, cpuMs: cpu, bodyMs: clock.milliseconds, events: history.count,
                     payloadBytes: history.reduce(0) { $0 + $1.payload.utf8.count }, warnedAtEvents: warned.withLock { $0 })
    }

    /// A fresh engine (as a restarted worker would open) resumes the workflow: every journaled step
    /// returns its result, the transcript is rebuilt, until turn N + 1 calls the model. ms from
    /// opening the engine to that call. The run stays `running`, so this can be repeated.
    func resume() async throws -> Double {
        let t0 = ContinuousClock.now
        let engine = try WorkflowEngine(databaseURL: database) { _ in }
        let gate = InterruptGate(stopMessage: stopMessage)
        await agent(gate: gate, clock: BodyClock()).register(on: engine, as: Self.workflowName)
        do {
            _ = try await engine.resume(Self.workflowID, as: ReplayAgentOutput.self)
            throw StasisError(.internalError, "the resumed replay workflow ended without reaching turn \(turns + 1)")
        } catch is CancellationError {}
        guard let fired = gate.firedAt else { throw StasisError(.internalError, "the resumed workflow never reached turn \(turns + 1)") }
        return (fired - t0).milliseconds
    }

    /// The journal's bytes on disk: the database and its WAL (SQLite folds the WAL in when the last connection closes).
    var storedBytes: Int64 { fileBytes(database) + walBytes }

    /// The WAL's bytes alone: 0 once every connection has closed (the last one checkpoints it away).
    var walBytes: Int64 { fileBytes(database.appendingToPath("-wal")) }
}

extension URL {
    /// The same path with `suffix` appended (`x.sqlite` → `x.sqlite-wal`).
    func appendingToPath(_ suffix: String) -> URL { URL(fileURLWithPath: path + suffix) }
}

/// A file's size in bytes, 0 if it does not exist.
func fileBytes(_ url: URL) -> Int64 {
    var st = stat()
    return stat(url.path, &st) == 0 ? Int64(st.st_size) : 0
}
