import Foundation
import StasisCore

/// The tar (ustar) framing of a snapshot archive: regular files only, written and read as a
/// stream, so an archive is never held whole in memory.
enum ArchiveTar {
    static let block = 512

    /// The 512-byte header of a regular file.
    static func header(name: String, size: UInt64, mode: UInt32 = 0o644) throws -> [UInt8] {
        guard name.utf8.count < 100, size < 0o77777777777 else {
            throw StasisError(.invalidArgument, "cannot archive \(name): its name or size does not fit a tar header")
        }
        var header = [UInt8](repeating: 0, count: block)
        func put(_ text: String, at offset: Int) {
            for (i, byte) in text.utf8.enumerated() { header[offset + i] = byte }
        }
        put(name, at: 0)
        put(String(format: "%07o", mode), at: 100)
        put("0000000", at: 108)
        put("0000000", at: 116)
        put(String(format: "%011llo", size), at: 124)
        put(String(format: "%011llo", UInt64(Date().timeIntervalSince1970)), at: 136)
        put("        ", at: 148)
        header[156] = UInt8(ascii: "0")
        put("ustar", at: 257)
        put("00", at: 263)
        let sum = header.reduce(0) { $0 + Int($1) }
        put(String(format: "%06o", sum), at: 148)
        header[154] = 0
        header[155] = UInt8(ascii: " ")
        return header
    }

    /// The name and size in a header; nil for an all-zero block (the end of the archive).
    static func parse(_ header: ArraySlice<UInt8>) throws -> (name: String, size: UInt64)? {
        guard header.count == block else { throw StasisError(.corrupted, "the archive ends inside a tar header") }
        if header.allSatisfy({ $0 == 0 }) { return nil }
        let bytes = Array(header)
        var sum = 0
        for (i, byte) in bytes.enumerated() { sum += (148 ..< 156).contains(i) ? 32 : Int(byte) }
        guard let stored = Int(field(bytes, 148, 8), radix: 8), stored == sum else {
            throw StasisError(.corrupted, "a tar header in the archive fails its checksum")
        }
        guard bytes[156] == UInt8(ascii: "0") || bytes[156] == 0 else {
            throw StasisError(.corrupted, "the archive holds something other than regular files")
        }
        guard let size = UInt64(field(bytes, 124, 12), radix: 8) else {
            throw StasisError(.corrupted, "a tar header in the archive has no valid size")
        }
        return (field(bytes, 0, 100), size)
    }

    /// Zero bytes that pad `size` to a whole block.
    static func padding(_ size: UInt64) -> Int {
        let rest = Int(size % UInt64(block))
        return rest == 0 ? 0 : block - rest
    }

    private static func field(_ bytes: [UInt8], _ offset: Int, _ length: Int) -> String {
        let slice = bytes[offset ..< offset + length].prefix { $0 != 0 }
        return String(decoding: slice, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }
}
