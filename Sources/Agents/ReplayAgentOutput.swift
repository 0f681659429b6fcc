/// What a `ReplayAgent` workflow returns once every turn has ended.
public struct ReplayAgentOutput: Codable, Sendable, Equatable {
    /// Turns run (one per user message).
    public var turns: Int
    /// Model calls made, over all turns.
    public var modelCalls: Int
    /// Tool calls run, over all turns.
    public var toolCalls: Int
    /// Messages in the transcript at the end, without the system prompt.
    public var transcriptMessages: Int
    /// The text of the model's last reply.
    public var lastReply: String

    /// Creates an output.
    public init(turns: Int, modelCalls: Int, toolCalls: Int, transcriptMessages: Int, lastReply: String) {
        self.turns = turns
        self.modelCalls = modelCalls
        self.toolCalls = toolCalls
        self.transcriptMessages = transcriptMessages
        self.lastReply = lastReply
    }
}
