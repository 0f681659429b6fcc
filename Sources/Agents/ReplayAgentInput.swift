/// The input of a `ReplayAgent` workflow: the user's messages, one turn each, in order.
///
/// Replay workflows have no way to receive a message while they run, so every turn's message is
/// part of the input, journaled once when the workflow is created.
public struct ReplayAgentInput: Codable, Sendable, Equatable {
    /// The user messages; turn *i* (from 1) answers `messages[i - 1]`.
    public var messages: [String]

    /// Creates an input of `messages`, one turn each.
    public init(messages: [String]) {
        self.messages = messages
    }
}
