import Agents
import Context
import Foundation
import Models
import StasisCore

/// The agent loop as a Stasis session writes it: the same records a `Session` appends per turn
/// (user, turnStarted, assistant, tool_call, tool_result, …, turnEnded), each a durable append to a
/// `ContextLog` of its own. The machine's part (snapshot, restore) is measured by `SnapshotSide`.
struct SessionRoad {
    static let session = "agent"

    let database: URL
    let turns: Int
    let toolBytes: Int
    let contextTurns: Int?

    /// Appending N turns.
    struct Build: Encodable {
        var wallMs: Double
        /// CPU of this process during the appends and model/tool calls, ms.
        var cpuMs: Double
        /// Time in the model and the tool, ms.
        var bodyMs: Double
        var records: Int
        /// Bytes of the records' JSON bodies.
        var bodyBytes: Int
        /// QEMU's CPU meanwhile (the session's machine, running idle), ms.
        var qemuIdleCPUMs: Double?

        /// µs per record outside the model and the tool: encoding, checksum, the durable append.
        var appendOverheadMicros: Double { records == 0 ? .nan : (wallMs - bodyMs) * 1000 / Double(records) }
    }

    /// Appends N turns (with the model called and the tool run, as a session does) and a suspend at the end.
    func build(machineName: String) async throws -> Build {
        let log = try ContextLog(url: database)
        let model = ScriptedModel()
        let clock = BodyClock()
        let tool = AgentScript.tool(size: toolBytes, clock: clock)
        var records = 0
        var bodyBytes = 0
        func append<T: Encodable & Sendable>(_ kind: RecordKind, _ body: T) async throws {
            let record = try await log.append(NewRecord(session: Self.session, kind: kind, value: body))
            records += 1
            bodyBytes += record.body.utf8.count
        }
        func event(_ name: String, _ state: SessionState, turn: String? = nil) async throws {
            try await append(.system, SystemEventBody(name, state: state, machine: machineName, turn: turn))
        }
        let cpu0 = CPUTime.processUsage().own
        let t0 = ContinuousClock.now
        try await append(.system, SystemEventBody(
            "created", state: .new,
            configuration: SessionConfiguration(image: "bench-bb", model: .scripted, systemPrompt: AgentScript.systemPrompt)))
        try await event("booting", .booting)
        try await event("booted", .idle)
        // The session keeps the transcript in memory here, as the Replay workflow does; today's
        // Session re-reads the whole log before every model call (see docs/benchmarks.md).
        var transcript: [ChatMessage] = []
        var turnStarts: [Int] = []
        for turn in 1 ... max(1, turns) {
            let turnID = "turn-\(turn)"
            let text = AgentScript.userMessage(turn: turn)
            try await append(.userMessage, UserMessageBody(text: text, turn: turnID))
            turnStarts.append(transcript.count)
            transcript.append(.user(text))
            try await event("turnStarted", .running, turn: turnID)
            for _ in 0 ..< 32 {
                let start = contextTurns.map { turnStarts[max(0, turnStarts.count - max(1, $0))] } ?? 0
                let request = ModelRequest(messages: [.system(AgentScript.systemPrompt)] + transcript[start...], tools: AgentScript.tools)
                let began = ContinuousClock.now
                let reply = try await model.complete(request)
                clock.add(ContinuousClock.now - began)
                try await append(.assistantMessage, AssistantMessageBody(
                    text: reply.message.content, toolCalls: reply.message.toolCalls, stopReason: reply.stopReason, usage: reply.usage))
                transcript.append(reply.message)
                if reply.message.toolCalls.isEmpty { break }
                for call in reply.message.toolCalls {
                    try await append(.toolCall, ToolCallBody(id: call.id, name: call.name, arguments: call.arguments))
                    let result = try await tool(call)
                    try await append(.toolResult, result)
                    transcript.append(.toolResult(callID: call.id, content: result.content))
                }
            }
            try await event("turnEnded", .idle, turn: turnID)
        }
        try await event("snapshotting", .snapshotting)
        // The snapshot itself is taken once per benchmark run (SnapshotSide); its record is written here.
        try await append(.system, SystemEventBody("suspended", state: .suspended, snapshot: "0123456789ab", snapshotBytes: 117_440_512))
        return Build(wallMs: (ContinuousClock.now - t0).milliseconds, cpuMs: CPUTime.processUsage().own - cpu0,
                     bodyMs: clock.milliseconds, records: records, bodyBytes: bodyBytes, qemuIdleCPUMs: nil)
    }

    /// What a restarted session reads to make its next model request: a fresh `ContextLog`, the
    /// records of the last `contextTurns` turns (checksums checked), turned into messages. ms.
    func readTail() throws -> (ms: Double, records: Int) {
        let t0 = ContinuousClock.now
        let log = try ContextLog(url: database)
        let last = try log.lastSeq(session: Self.session)
        let wanted = contextTurns ?? Int.max
        // A turn here is 7 records; read a page that should hold the window, and widen it if not.
        var page = Int64(min(Int(last), 8 * (contextTurns ?? Int(last))))
        var records: [ContextRecord]
        while true {
            records = try log.records(session: Self.session, after: max(0, last - page))
            let users = records.indices.filter { records[$0].kind == .userMessage }
            if users.count >= wanted || page >= last {
                let from = users.count >= wanted ? users[users.count - wanted] : records.startIndex
                records = Array(records[from...])
                break
            }
            page *= 2
        }
        let messages = try Transcript.messages(records, systemPrompt: AgentScript.systemPrompt)
        _ = ModelRequest(messages: messages, tools: AgentScript.tools)
        return ((ContinuousClock.now - t0).milliseconds, records.count)
    }

    /// What today's `Session` reads before every model call: the whole log, checked, as messages. ms.
    func readWhole() throws -> Double {
        let t0 = ContinuousClock.now
        let log = try ContextLog(url: database)
        let messages = try Transcript.messages(try log.records(session: Self.session), systemPrompt: AgentScript.systemPrompt)
        _ = ModelRequest(messages: messages, tools: AgentScript.tools)
        return (ContinuousClock.now - t0).milliseconds
    }

    /// The log's bytes on disk: the database and its WAL.
    var storedBytes: Int64 { fileBytes(database) + walBytes }

    /// The WAL's bytes alone: 0 once every connection has closed (the last one checkpoints it away).
    var walBytes: Int64 { fileBytes(database.appendingToPath("-wal")) }
}
