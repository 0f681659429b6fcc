/// One event of a streamed reply: text as it arrives, then the whole reply.
public enum ModelEvent: Sendable {
    /// A piece of the reply's text; the pieces, joined, are the reply's text.
    case text(String)
    /// The complete reply; always the last event.
    case reply(ModelReply)
}
