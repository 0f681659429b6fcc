import Crypto
import Foundation

/// The chained checksum of context records.
enum RecordChecksum {
    /// The checksum a record with these fields carries after a record whose checksum is `previous`
    /// ("" for the first record of a session).
    static func compute(session: String, seq: Int64, kind: RecordKind, timeMicros: Int64, body: String, previous: String) -> String {
        var hasher = SHA256()
        // NUL separators: no field can contain a NUL that shifts another field's bytes (JSON escapes it).
        hasher.update(data: Data("\(session)\u{0}\(seq)\u{0}\(kind.rawValue)\u{0}\(timeMicros)\u{0}\(previous)\u{0}".utf8))
        hasher.update(data: Data(body.utf8))
        return hex(hasher.finalize())
    }

    private static let digits = Array("0123456789abcdef".utf8)

    // String(format:) per byte costs more than the hash itself at tens of thousands of appends a second.
    private static func hex(_ digest: SHA256.Digest) -> String {
        var out = [UInt8]()
        out.reserveCapacity(SHA256.byteCount * 2)
        for byte in digest {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether `record` carries the checksum its fields and `previous` give.
    static func isIntact(_ record: ContextRecord, previous: String) -> Bool {
        record.checksum == compute(
            session: record.session, seq: record.seq, kind: record.kind, timeMicros: record.timeMicros,
            body: record.body, previous: previous)
    }
}
