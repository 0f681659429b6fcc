import AsyncHTTPClient
import Logging
import NIOCore

/// A model behind an OpenAI-compatible chat completions API (OpenAI, vLLM, Ollama, llama.cpp …),
/// streamed.
public struct OpenAIChatModel: ModelProvider {
    /// The API's root, e.g. "https://api.openai.com/v1" or "http://127.0.0.1:11434/v1".
    public let baseURL: String
    /// The model's name as the API knows it.
    public let model: String
    /// How long to wait for the answer's status line; the body's pace is bounded by the client's
    /// read timeout instead.
    public var responseTimeout: TimeAmount = .minutes(10)
    /// Where requests are logged (never their headers).
    public var logger: Logger
    private let apiKey: APIKey?
    private let httpClient: HTTPClient

    /// A provider for `model` at `baseURL`; `apiKey` nil sends no `Authorization` header (local servers).
    public init(
        baseURL: String, model: String, apiKey: APIKey?, httpClient: HTTPClient = .shared,
        logger: Logger = Logger(label: "stasis.models")
    ) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.model = model
        self.apiKey = apiKey
        self.httpClient = httpClient
        self.logger = logger
    }

    public var description: String { "openai:\(model) at \(baseURL)" }

    public func stream(_ request: ModelRequest) -> AsyncThrowingStream<ModelEvent, any Error> {
        let body: JSONValue
        do {
            body = try requestBody(request)
        } catch {
            return AsyncThrowingStream { throw error }
        }
        var headers: [(String, String)] = []
        if let apiKey { headers.append(("authorization", "Bearer \(apiKey.secret)")) }
        let post = EventStreamRequest(
            providerName: "OpenAI-compatible API", url: "\(baseURL)/chat/completions", headers: headers,
            body: body, apiKey: apiKey, timeout: responseTimeout)
        return post.stream(decoder: OpenAIStreamDecoder(), httpClient: httpClient, logger: logger)
    }

    /// The chat completions request body for `request`.
    func requestBody(_ request: ModelRequest) throws -> JSONValue {
        var body: [String: JSONValue] = [
            "model": .string(model),
            "messages": .array(request.messages.map(Self.wireMessage)),
            "stream": true,
            "stream_options": ["include_usage": true],
        ]
        if !request.tools.isEmpty {
            body["tools"] = .array(
                try request.tools.map { tool in
                    [
                        "type": "function",
                        "function": [
                            "name": .string(tool.name),
                            "description": .string(tool.description),
                            "parameters": try .object(parsing: tool.parameters, "the parameters of tool \(tool.name)"),
                        ],
                    ]
                })
        }
        if let maxTokens = request.maxTokens { body["max_tokens"] = .integer(Int64(maxTokens)) }
        return .object(body)
    }

    private static func wireMessage(_ message: ChatMessage) -> JSONValue {
        switch message.role {
        case .system, .user:
            return ["role": .string(message.role.rawValue), "content": .string(message.content)]
        case .tool:
            return [
                "role": "tool", "tool_call_id": .string(message.toolCallID ?? ""),
                "content": .string(message.content),
            ]
        case .assistant:
            guard !message.toolCalls.isEmpty else {
                return ["role": "assistant", "content": .string(message.content)]
            }
            let calls: [JSONValue] = message.toolCalls.map { call in
                [
                    "id": .string(call.id), "type": "function",
                    "function": ["name": .string(call.name), "arguments": .string(call.arguments)],
                ]
            }
            // The API wants null, not "", for an assistant turn that only calls tools.
            let content: JSONValue = message.content.isEmpty ? .null : .string(message.content)
            return ["role": "assistant", "content": content, "tool_calls": .array(calls)]
        }
    }
}
