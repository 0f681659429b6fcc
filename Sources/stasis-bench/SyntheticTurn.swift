import Agents
import Context
import Models

/// One turn of a synthetic agent session: a user message, an assistant message asking for one
/// shell call, the call, its output, the final answer, and the turn's two system events.
/// The records carry Agents' own record bodies, so they hold the bytes a real session writes.
/// Encodes (for the LangGraph peer) as the messages alone.
struct SyntheticTurn: Encodable {
    var user: String
    var assistant: String
    var toolCall: ToolCall
    var toolResult: String
    var final: String
    var turnID: String
    var machine: String
    var snapshot: String
    var toolMilliseconds: Double
    var callUsage: ModelUsage
    var finalUsage: ModelUsage

    private enum CodingKeys: String, CodingKey {
        case user, assistant, toolCall, toolResult, final
    }

    init(index: Int, machine: String, snapshot: String, text: inout SeededText) {
        turnID = text.uuid()
        user = text.prose(text.int(150 ... 250))
        assistant = text.prose(text.int(220 ... 300))
        let command = text.command()
        toolCall = ToolCall(id: "call_\(text.hex(24))", name: "shell", arguments: "{\"command\":\"\(command)\"}")
        toolResult = text.shellOutput(text.int(1000 ... 2000)) + "\n[exit code 0]"
        final = text.prose(text.int(250 ... 350))
        self.machine = machine
        self.snapshot = snapshot
        toolMilliseconds = Double(text.int(5 ... 5000)) / 10
        // The conversation so far is the prompt: input tokens grow with the turn, as a model's do.
        let input = 1500 + index * 700
        callUsage = ModelUsage(inputTokens: input, outputTokens: text.int(60 ... 120))
        finalUsage = ModelUsage(inputTokens: input + 500, outputTokens: text.int(60 ... 100))
    }

    /// The records Session appends for this turn, in its order.
    func records(session: String) throws -> [NewRecord] {
        [
            try NewRecord(session: session, kind: .userMessage, value: UserMessageBody(text: user, turn: turnID)),
            try NewRecord(session: session, kind: .system, value: SystemEventBody(
                "turnStarted", state: .running, machine: machine, snapshot: snapshot, turn: turnID)),
            try NewRecord(session: session, kind: .assistantMessage, value: AssistantMessageBody(
                text: assistant, toolCalls: [toolCall], stopReason: "tool_use", usage: callUsage)),
            try NewRecord(session: session, kind: .toolCall, value: ToolCallBody(
                id: toolCall.id, name: toolCall.name, arguments: toolCall.arguments)),
            try NewRecord(session: session, kind: .toolResult, value: ToolResultBody(
                id: toolCall.id, name: toolCall.name, content: toolResult, milliseconds: toolMilliseconds)),
            try NewRecord(session: session, kind: .assistantMessage, value: AssistantMessageBody(
                text: final, toolCalls: [], stopReason: "end_turn", usage: finalUsage)),
            try NewRecord(session: session, kind: .system, value: SystemEventBody(
                "turnEnded", state: .idle, machine: machine, snapshot: snapshot, turn: turnID)),
        ]
    }
}
