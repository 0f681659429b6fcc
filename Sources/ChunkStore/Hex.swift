/// Lowercase hex for SHA-256 digests, written by hand because `String(format:)` per byte costs
/// more than hashing a 4 KiB frame.
enum Hex {
    /// The length of a SHA-256 digest in hex.
    static let digestLength = 64

    /// Lowercase hex of `bytes`.
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let array = Array(bytes)
        return String(unsafeUninitializedCapacity: array.count * 2) { out in
            for (i, byte) in array.enumerated() {
                out[2 * i] = digit(byte >> 4)
                out[2 * i + 1] = digit(byte & 0xF)
            }
            return array.count * 2
        }
    }

    /// Whether `text` is 64 lowercase hex digits: a SHA-256 as the store names chunks. Checked
    /// before a hash becomes a path, so a damaged manifest cannot point outside the store.
    static func isDigest(_ text: String) -> Bool {
        var count = 0
        for c in text.utf8 {
            guard (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) else { return false }
            count += 1
        }
        return count == digestLength
    }

    /// The bytes of a hex string already checked by `isDigest`.
    static func decode(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count / 2)
        append(text, to: &out)
        return out
    }

    /// Appends the bytes of a hex string already checked by `isDigest` to `out`.
    static func append(_ text: String, to out: inout [UInt8]) {
        var text = text
        text.withUTF8 { utf8 in
            var i = 0
            while i + 1 < utf8.count {
                out.append(value(utf8[i]) << 4 | value(utf8[i + 1]))
                i += 2
            }
        }
    }

    private static func value(_ digit: UInt8) -> UInt8 { digit <= 0x39 ? digit &- 0x30 : digit &- 0x61 &+ 10 }

    private static func digit(_ value: UInt8) -> UInt8 { value < 10 ? 0x30 + value : 0x61 - 10 + value }
}
