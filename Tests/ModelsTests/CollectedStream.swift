@testable import Models

/// Everything a reply stream produced, read to its end.
struct CollectedStream {
    /// The `.text` pieces, in order.
    var texts: [String] = []
    /// The `.reply` events; a well-formed stream has exactly one, last.
    var replies: [ModelReply] = []
    /// Whether the last event was the reply.
    var replyWasLast = false

    init(_ stream: AsyncThrowingStream<ModelEvent, any Error>) async throws {
        for try await event in stream {
            switch event {
            case .text(let piece):
                texts.append(piece)
                replyWasLast = false
            case .reply(let reply):
                replies.append(reply)
                replyWasLast = true
            }
        }
    }

    /// The single reply, or nil when there was not exactly one.
    var reply: ModelReply? { replies.count == 1 ? replies.first : nil }
}
