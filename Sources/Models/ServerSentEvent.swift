/// One event of a `text/event-stream` body.
struct ServerSentEvent: Sendable, Hashable {
    /// The `event:` field; "message" when the event has none.
    var event: String
    /// The `data:` lines, joined by "\n".
    var data: String
    /// The last `id:` field seen, if any.
    var id: String?
}
