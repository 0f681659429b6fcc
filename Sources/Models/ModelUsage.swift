/// The tokens one reply cost, as the provider counted them.
public struct ModelUsage: Codable, Sendable, Hashable {
    /// Tokens read: the prompt, the conversation and the tool descriptions.
    public var inputTokens: Int
    /// Tokens written: the reply's text and tool calls.
    public var outputTokens: Int

    /// Creates a usage count.
    public init(inputTokens: Int, outputTokens: Int) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
    }
}
