/// Who wrote a message in a conversation with a model.
public enum ChatRole: String, Codable, Sendable {
    case system, user, assistant, tool
}
