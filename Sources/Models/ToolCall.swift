/// A model's request to run one tool.
public struct ToolCall: Codable, Sendable, Hashable {
    /// The id the tool's result must quote back (`ChatMessage.toolCallID`).
    public var id: String
    /// The tool's name, one of the `ToolSpec` names offered.
    public var name: String
    /// The arguments as JSON object text, exactly as the model produced them.
    public var arguments: String

    /// Creates a tool call.
    public init(id: String, name: String, arguments: String) {
        self.id = id
        self.name = name
        self.arguments = arguments
    }
}
