/// What a context record holds.
public enum RecordKind: String, Sendable, Codable, CaseIterable {
    /// A message from the user.
    case userMessage = "user"
    /// A message from the model (text and the tool calls it asked for).
    case assistantMessage = "assistant"
    /// A tool call about to run.
    case toolCall = "tool_call"
    /// A tool call's result (or its interruption).
    case toolResult = "tool_result"
    /// A lifecycle event of the session: created, restored, suspended, crashed, …
    case system
}
