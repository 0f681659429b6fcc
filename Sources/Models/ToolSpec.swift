/// A tool offered to the model: its name, what it does, and the JSON Schema of its arguments.
public struct ToolSpec: Codable, Sendable, Hashable {
    /// The name the model calls it by.
    public var name: String
    /// What the tool does, for the model to read.
    public var description: String
    /// The JSON Schema of the arguments, as JSON object text.
    public var parameters: String

    /// Creates a tool description.
    public init(name: String, description: String, parameters: String) {
        self.name = name
        self.description = description
        self.parameters = parameters
    }
}
