import Foundation
import StasisCore

/// The bulky arrays of a frame list (version 5) as base64 text inside its JSON: whole numbers as
/// zigzag LEB128 varints, SHA-256 names as their raw 32 bytes. `JSONDecoder` spends about
/// 0.4 µs on each element of an `[Int]`; a 1,000-turn session's lists hold tens of thousands.
enum PackedNumbers {
    /// Base64 of `values`, each as a zigzag LEB128 varint (small magnitudes of either sign take
    /// one byte).
    static func encode(_ values: [Int]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(values.count * 2)
        for value in values {
            var zigzag = UInt64(bitPattern: Int64(value) << 1) ^ UInt64(bitPattern: Int64(value) >> 63)
            while zigzag >= 0x80 {
                bytes.append(UInt8(truncatingIfNeeded: zigzag) | 0x80)
                zigzag >>= 7
            }
            bytes.append(UInt8(zigzag))
        }
        return Data(bytes).base64EncodedString()
    }

    /// The numbers `encode` packed into `text`; damage (bad base64, a varint longer than 64 bits
    /// or cut short) is `.corrupted`, naming `field`.
    static func decode(_ text: String, field: String) throws -> [Int] {
        guard let data = Data(base64Encoded: text) else {
            throw StasisError(.corrupted, "frame list field \(field) is not base64")
        }
        var values: [Int] = []
        values.reserveCapacity(data.count)
        try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var value: UInt64 = 0
            var shift: UInt64 = 0
            for byte in bytes {
                guard shift < 64, shift < 63 || byte <= 1 else {
                    throw StasisError(.corrupted, "frame list field \(field) holds a number wider than 64 bits")
                }
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 {
                    values.append(Int(Int64(bitPattern: (value >> 1) ^ (0 &- (value & 1)))))
                    value = 0
                    shift = 0
                } else {
                    shift += 7
                }
            }
            guard shift == 0 else { throw StasisError(.corrupted, "frame list field \(field) ends inside a number") }
        }
        return values
    }

    /// Base64 of the raw bytes of SHA-256 names already checked by `Hex.isDigest`.
    static func encode(digests: [String]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digests.count * 32)
        for name in digests { Hex.append(name, to: &bytes) }
        return Data(bytes).base64EncodedString()
    }

    /// The SHA-256 names `encode(digests:)` packed into `text`, as lowercase hex.
    static func decodeDigests(_ text: String, field: String) throws -> [String] {
        guard let data = Data(base64Encoded: text), data.count % 32 == 0 else {
            throw StasisError(.corrupted, "frame list field \(field) is not base64 of whole 32-byte names")
        }
        return stride(from: 0, to: data.count, by: 32).map { Hex.encode(data[data.startIndex + $0 ..< data.startIndex + $0 + 32]) }
    }
}
