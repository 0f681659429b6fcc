import Foundation

/// One record of a session's log: append-only and checksummed.
public struct ContextRecord: Sendable, Hashable, Codable {
    /// The session the record belongs to.
    public let session: String
    /// Position in the session's log, from 1, without gaps.
    public let seq: Int64
    /// What the record holds.
    public let kind: RecordKind
    /// The record's content, JSON text.
    public let body: String
    /// When the record was appended, in microseconds since 1970 (exact, so the checksum is stable).
    public let timeMicros: Int64
    /// SHA-256 (hex) over the fields and the previous record's checksum: a chain, so a changed,
    /// missing or reordered record breaks every checksum after it.
    public let checksum: String

    /// When the record was appended.
    public var time: Date { Date(timeIntervalSince1970: Double(timeMicros) / 1_000_000) }

    /// Decodes the body as `T`.
    public func decodeBody<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(body.utf8))
    }
}
