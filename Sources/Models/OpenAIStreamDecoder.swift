import Foundation
import StasisCore

/// Reads a chat completions stream: `data: {chunk}` events, then `data: [DONE]`. Text comes in
/// `choices[0].delta.content`; tool calls in `delta.tool_calls`, keyed by `index`, their arguments
/// in fragments; usage in a last chunk whose `choices` is empty.
struct OpenAIStreamDecoder: ReplyStreamDecoder, Sendable {
    private var text = ""
    /// Tool calls being assembled, by the index the API gives them.
    private var toolCalls: [Int: ToolCall] = [:]
    private var finishReason: String?
    private var usage: ModelUsage?
    private(set) var isFinished = false

    mutating func consume(_ event: ServerSentEvent) throws -> [String] {
        let data = event.data.trimmingCharacters(in: .whitespaces)
        if data == "[DONE]" {
            isFinished = true
            return []
        }
        guard let chunk = try? JSONValue.parse(data) else {
            throw StasisError(.protocolError, "OpenAI-compatible API sent a stream event that is not JSON: \(data.prefix(200))")
        }
        if let error = chunk["error"], !error.isNull {
            let message = error["message"]?.stringValue ?? error.stringValue ?? "\(error)"
            throw StasisError(.protocolError, "OpenAI-compatible API reported an error mid-stream: \(message)")
        }
        if let usage = chunk["usage"], let input = usage["prompt_tokens"]?.intValue {
            self.usage = ModelUsage(inputTokens: input, outputTokens: usage["completion_tokens"]?.intValue ?? 0)
        }
        guard let choice = chunk["choices"]?[0] else { return [] }
        var pieces: [String] = []
        if let delta = choice["delta"] {
            if let content = delta["content"]?.stringValue, !content.isEmpty {
                text += content
                pieces.append(content)
            }
            for (position, fragment) in (delta["tool_calls"]?.arrayValue ?? []).enumerated() {
                // Some servers leave out `index` when they send each call whole.
                let index = fragment["index"]?.intValue ?? position
                var call = toolCalls[index] ?? ToolCall(id: "", name: "", arguments: "")
                if let id = fragment["id"]?.stringValue, !id.isEmpty { call.id = id }
                if let name = fragment["function"]?["name"]?.stringValue, call.name.isEmpty { call.name = name }
                call.arguments += fragment["function"]?["arguments"]?.stringValue ?? ""
                toolCalls[index] = call
            }
        }
        if let reason = choice["finish_reason"]?.stringValue { finishReason = reason }
        return pieces
    }

    func reply() throws -> ModelReply {
        guard finishReason != nil || isFinished else {
            throw StasisError(.protocolError, "the OpenAI-compatible API's stream ended before the reply was complete")
        }
        let calls = toolCalls.keys.sorted().compactMap { index -> ToolCall? in
            guard var call = toolCalls[index] else { return nil }
            if call.id.isEmpty { call.id = "call_\(index)" }
            if call.arguments.isEmpty { call.arguments = "{}" }
            return call
        }
        let stopReason: String
        switch finishReason {
        case "tool_calls": stopReason = "tool_use"
        // Some servers (older Ollama) say "stop" even when the turn ends in tool calls.
        case "stop": stopReason = calls.isEmpty ? "end_turn" : "tool_use"
        case let reason?: stopReason = reason
        case nil: stopReason = calls.isEmpty ? "end_turn" : "tool_use"
        }
        return ModelReply(message: .assistant(text, toolCalls: calls), stopReason: stopReason, usage: usage)
    }
}
