/// What is sent to a model for one reply: the conversation so far and the tools it may call.
public struct ModelRequest: Sendable {
    /// The conversation, oldest first.
    public var messages: [ChatMessage]
    /// The tools the model may call.
    public var tools: [ToolSpec]
    /// The most tokens the reply may have; nil leaves it to the provider (Anthropic: 4096).
    public var maxTokens: Int?

    /// Creates a request.
    public init(messages: [ChatMessage], tools: [ToolSpec], maxTokens: Int? = nil) {
        self.messages = messages
        self.tools = tools
        self.maxTokens = maxTokens
    }
}
