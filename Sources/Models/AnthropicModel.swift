import AsyncHTTPClient
import Logging
import NIOCore

/// A Claude model behind Anthropic's Messages API, streamed.
public struct AnthropicModel: ModelProvider {
    /// The API's root, without `/v1`.
    public let baseURL: String
    /// The model's name, e.g. "claude-sonnet-4-5".
    public let model: String
    /// The reply's token limit when the request sets none; the API requires one.
    public var defaultMaxTokens = 4096
    /// How long to wait for the answer's status line; the body's pace is bounded by the client's
    /// read timeout instead.
    public var responseTimeout: TimeAmount = .minutes(10)
    /// Where requests are logged (never their headers).
    public var logger: Logger
    private let apiKey: APIKey
    private let httpClient: HTTPClient

    /// The version of the Messages API whose format this file speaks.
    static let apiVersion = "2023-06-01"

    /// A provider for `model` at `baseURL`.
    public init(
        baseURL: String = "https://api.anthropic.com", model: String, apiKey: APIKey,
        httpClient: HTTPClient = .shared, logger: Logger = Logger(label: "stasis.models")
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.model = model
        self.apiKey = apiKey
        self.httpClient = httpClient
        self.logger = logger
    }

    public var description: String { "anthropic:\(model) at \(baseURL)" }

    public func stream(_ request: ModelRequest) -> AsyncThrowingStream<ModelEvent, any Error> {
        let body: JSONValue
        do {
            body = try requestBody(request)
        } catch {
            return AsyncThrowingStream { throw error }
        }
        let post = EventStreamRequest(
            providerName: "Anthropic API", url: "\(baseURL)/v1/messages",
            headers: [("x-api-key", apiKey.secret), ("anthropic-version", Self.apiVersion)],
            body: body, apiKey: apiKey, timeout: responseTimeout)
        return post.stream(decoder: AnthropicStreamDecoder(), httpClient: httpClient, logger: logger)
    }

    /// The Messages request body for `request`.
    func requestBody(_ request: ModelRequest) throws -> JSONValue {
        var body: [String: JSONValue] = [
            "model": .string(model),
            "max_tokens": .integer(Int64(request.maxTokens ?? defaultMaxTokens)),
            "messages": .array(try Self.wireMessages(request.messages)),
            "stream": true,
        ]
        let system = request.messages.filter { $0.role == .system }.map(\.content)
        if !system.isEmpty { body["system"] = .string(system.joined(separator: "\n\n")) }
        if !request.tools.isEmpty {
            body["tools"] = .array(
                try request.tools.map { tool in
                    [
                        "name": .string(tool.name),
                        "description": .string(tool.description),
                        "input_schema": try .object(parsing: tool.parameters, "the parameters of tool \(tool.name)"),
                    ]
                })
        }
        return .object(body)
    }

    /// The conversation without its system messages (they go in `system`), tool results turned into
    /// user messages of `tool_result` blocks, consecutive results merged into one message.
    private static func wireMessages(_ messages: [ChatMessage]) throws -> [JSONValue] {
        var wire: [JSONValue] = []
        var pendingResults: [JSONValue] = []
        func flushResults() {
            guard !pendingResults.isEmpty else { return }
            wire.append(["role": "user", "content": .array(pendingResults)])
            pendingResults = []
        }
        for message in messages {
            switch message.role {
            case .system:
                continue
            case .tool:
                pendingResults.append([
                    "type": "tool_result", "tool_use_id": .string(message.toolCallID ?? ""),
                    "content": .string(message.content),
                ])
            case .user:
                flushResults()
                wire.append(["role": "user", "content": .string(message.content)])
            case .assistant:
                flushResults()
                wire.append(assistantMessage(message))
            }
        }
        flushResults()
        return wire
    }

    private static func assistantMessage(_ message: ChatMessage) -> JSONValue {
        guard !message.toolCalls.isEmpty else {
            return ["role": "assistant", "content": .string(message.content)]
        }
        var blocks: [JSONValue] = []
        // The API refuses an empty text block.
        if !message.content.isEmpty { blocks.append(["type": "text", "text": .string(message.content)]) }
        for call in message.toolCalls {
            // Arguments a model cut short (max_tokens) are not an object; the API wants one, and
            // the tool call already failed on them, so send an empty one rather than fail the turn.
            let input = (try? JSONValue.object(parsing: call.arguments, "arguments")) ?? [:]
            blocks.append([
                "type": "tool_use", "id": .string(call.id), "name": .string(call.name), "input": input,
            ])
        }
        return ["role": "assistant", "content": .array(blocks)]
    }
}
