/// Turns one provider's stream of server-sent events into text pieces and, at the end, a reply.
protocol ReplyStreamDecoder {
    /// Whether the provider has said its reply is complete; later bytes are not read.
    var isFinished: Bool { get }

    /// Reads one event and returns the text pieces it carries, in order.
    mutating func consume(_ event: ServerSentEvent) throws -> [String]

    /// The reply assembled from the events read; throws if the stream ended before it was complete.
    func reply() throws -> ModelReply
}
