import Foundation

/// A record to append: the log assigns its sequence number, time and checksum.
public struct NewRecord: Sendable, Hashable {
    /// The session to append to.
    public var session: String
    /// What the record holds.
    public var kind: RecordKind
    /// The content, JSON text.
    public var body: String

    public init(session: String, kind: RecordKind, body: String) {
        self.session = session
        self.kind = kind
        self.body = body
    }

    /// A record whose body is `value` encoded as JSON (keys sorted, so equal values give equal bytes).
    public init<T: Encodable>(session: String, kind: RecordKind, value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        self.init(session: session, kind: kind, body: String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}
