/// One message of a conversation: text, and for an assistant the tools it calls, or for a tool the
/// call it answers.
public struct ChatMessage: Codable, Sendable, Hashable {
    /// Who wrote the message.
    public var role: ChatRole
    /// The text; for a tool message, the tool's result.
    public var content: String
    /// The tools an assistant message calls, in order; empty for other roles.
    public var toolCalls: [ToolCall]
    /// For a tool message, the `ToolCall.id` it answers.
    public var toolCallID: String?

    /// Creates a message.
    public init(role: ChatRole, content: String, toolCalls: [ToolCall] = [], toolCallID: String? = nil) {
        self.role = role
        self.content = content
        self.toolCalls = toolCalls
        self.toolCallID = toolCallID
    }

    /// A system prompt.
    public static func system(_ content: String) -> ChatMessage {
        ChatMessage(role: .system, content: content)
    }

    /// A message from the user.
    public static func user(_ content: String) -> ChatMessage {
        ChatMessage(role: .user, content: content)
    }

    /// A message from the model: text, tool calls, or both.
    public static func assistant(_ content: String, toolCalls: [ToolCall] = []) -> ChatMessage {
        ChatMessage(role: .assistant, content: content, toolCalls: toolCalls)
    }

    /// The result of the tool call `callID`.
    public static func toolResult(callID: String, content: String) -> ChatMessage {
        ChatMessage(role: .tool, content: content, toolCallID: callID)
    }
}
