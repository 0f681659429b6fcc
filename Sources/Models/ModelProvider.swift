import StasisCore

/// A source of model replies: the scripted model, or an API reached over HTTP.
public protocol ModelProvider: Sendable {
    /// What the provider is, for logs and status, e.g. "openai:gpt-4o-mini at http://127.0.0.1:11434/v1".
    var description: String { get }

    /// Streams the reply to `request`: `.text` pieces, then one `.reply`. Ending the stream early
    /// (dropping it or cancelling its consumer) cancels the request.
    func stream(_ request: ModelRequest) -> AsyncThrowingStream<ModelEvent, any Error>
}

extension ModelProvider {
    /// The reply to `request`, once it is complete.
    public func complete(_ request: ModelRequest) async throws -> ModelReply {
        for try await event in stream(request) {
            if case .reply(let reply) = event { return reply }
        }
        throw StasisError(.protocolError, "\(description) ended its reply stream without a reply")
    }
}
