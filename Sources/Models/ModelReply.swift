/// A model's complete answer to one request.
public struct ModelReply: Codable, Sendable, Hashable {
    /// The assistant message: its text and its tool calls.
    public var message: ChatMessage
    /// Why the model stopped: "end_turn", "tool_use", "max_tokens", or the provider's own reason.
    public var stopReason: String
    /// The tokens it cost, when the provider said.
    public var usage: ModelUsage?

    /// Creates a reply.
    public init(message: ChatMessage, stopReason: String, usage: ModelUsage?) {
        self.message = message
        self.stopReason = stopReason
        self.usage = usage
    }
}
