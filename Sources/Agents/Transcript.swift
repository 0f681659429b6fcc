import Context
import Models

/// Turns a session's log into the messages a model is shown.
public enum Transcript {
    /// The conversation in `records`, after the system prompt. Tool call records are markers for
    /// crash recovery; the model sees calls in the assistant message and their results.
    public static func messages(_ records: [ContextRecord], systemPrompt: String) throws -> [ChatMessage] {
        var messages: [ChatMessage] = [.system(systemPrompt)]
        for record in records {
            switch record.kind {
            case .userMessage:
                messages.append(.user(try record.decodeBody(UserMessageBody.self).text))
            case .assistantMessage:
                let body = try record.decodeBody(AssistantMessageBody.self)
                messages.append(.assistant(body.text, toolCalls: body.toolCalls))
            case .toolResult:
                let body = try record.decodeBody(ToolResultBody.self)
                messages.append(.toolResult(callID: body.id, content: body.content))
            case .toolCall, .system:
                continue
            }
        }
        return messages
    }

    /// Tool calls that were started (a tool call record) but have no result.
    static func unansweredToolCalls(_ records: [ContextRecord]) throws -> [ToolCallBody] {
        var open: [String: ToolCallBody] = [:]
        var order: [String] = []
        for record in records {
            switch record.kind {
            case .toolCall:
                let call = try record.decodeBody(ToolCallBody.self)
                open[call.id] = call
                order.append(call.id)
            case .toolResult:
                open[try record.decodeBody(ToolResultBody.self).id] = nil
            default:
                continue
            }
        }
        return order.compactMap { open[$0] }
    }

    /// Calls the assistant asked for that have neither started nor finished, in order.
    static func pendingToolCalls(_ records: [ContextRecord]) throws -> [ToolCall] {
        guard let lastAssistant = records.last(where: { $0.kind == .assistantMessage }) else { return [] }
        let asked = try lastAssistant.decodeBody(AssistantMessageBody.self).toolCalls
        let answered = Set(try records.filter { $0.kind == .toolResult && $0.seq > lastAssistant.seq }
            .map { try $0.decodeBody(ToolResultBody.self).id })
        return asked.filter { !answered.contains($0.id) }
    }
}
