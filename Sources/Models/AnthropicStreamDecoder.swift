import StasisCore

/// Reads a Messages stream: `message_start` (input usage), per content block a
/// `content_block_start`, `content_block_delta`s and a `content_block_stop`, then `message_delta`
/// (stop reason, output usage) and `message_stop`. `ping` is ignored; `error` fails the reply.
struct AnthropicStreamDecoder: ReplyStreamDecoder, Sendable {
    private var text = ""
    /// Tool use blocks being assembled, by content block index.
    private var toolCalls: [Int: ToolCall] = [:]
    private var stopReason: String?
    private var inputTokens: Int?
    private var outputTokens = 0
    private(set) var isFinished = false

    mutating func consume(_ event: ServerSentEvent) throws -> [String] {
        guard let payload = try? JSONValue.parse(event.data) else {
            throw StasisError(.protocolError, "Anthropic API sent a stream event that is not JSON: \(event.data.prefix(200))")
        }
        switch payload["type"]?.stringValue ?? event.event {
        case "message_start":
            if let usage = payload["message"]?["usage"] { readUsage(usage) }
        case "content_block_start":
            guard let index = payload["index"]?.intValue, let block = payload["content_block"] else { break }
            if block["type"]?.stringValue == "tool_use" {
                toolCalls[index] = ToolCall(
                    id: block["id"]?.stringValue ?? "", name: block["name"]?.stringValue ?? "", arguments: "")
            } else if block["type"]?.stringValue == "text", let initial = block["text"]?.stringValue, !initial.isEmpty {
                text += initial
                return [initial]
            }
        case "content_block_delta":
            guard let index = payload["index"]?.intValue, let delta = payload["delta"] else { break }
            switch delta["type"]?.stringValue {
            case "text_delta":
                guard let piece = delta["text"]?.stringValue, !piece.isEmpty else { break }
                text += piece
                return [piece]
            case "input_json_delta":
                toolCalls[index]?.arguments += delta["partial_json"]?.stringValue ?? ""
            default:
                break  // thinking and signature deltas are not part of the reply's text
            }
        case "message_delta":
            if let reason = payload["delta"]?["stop_reason"]?.stringValue { stopReason = reason }
            if let usage = payload["usage"] { readUsage(usage) }
        case "message_stop":
            isFinished = true
        case "error":
            let message = payload["error"]?["message"]?.stringValue ?? event.data
            let type = payload["error"]?["type"]?.stringValue ?? "error"
            throw StasisError(.protocolError, "Anthropic API reported an error mid-stream: \(message) (\(type))")
        default:
            break  // ping, content_block_stop, and event types added after this was written
        }
        return []
    }

    /// Usage appears in `message_start` and, cumulatively, in `message_delta`; cached prompt
    /// tokens are counted apart by the API and added back here, since they were read too.
    private mutating func readUsage(_ usage: JSONValue) {
        if let input = usage["input_tokens"]?.intValue {
            inputTokens = input + (usage["cache_creation_input_tokens"]?.intValue ?? 0)
                + (usage["cache_read_input_tokens"]?.intValue ?? 0)
        }
        if let output = usage["output_tokens"]?.intValue { outputTokens = output }
    }

    func reply() throws -> ModelReply {
        guard let stopReason else {
            throw StasisError(.protocolError, "the Anthropic API's stream ended before the reply was complete")
        }
        let calls = toolCalls.keys.sorted().compactMap { index -> ToolCall? in
            guard var call = toolCalls[index] else { return nil }
            // A tool without parameters streams no input at all.
            if call.arguments.isEmpty { call.arguments = "{}" }
            return call
        }
        let usage = inputTokens.map { ModelUsage(inputTokens: $0, outputTokens: outputTokens) }
        return ModelReply(message: .assistant(text, toolCalls: calls), stopReason: stopReason, usage: usage)
    }
}
