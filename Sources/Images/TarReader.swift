import Foundation
import StasisCore

/// One member of a tar archive, with pax and GNU long-name extensions already applied.
public struct TarEntry: Sendable, Equatable {
    /// What a member is.
    public enum Kind: Sendable, Equatable {
        case regular, directory, symlink, hardLink, characterDevice, blockDevice, fifo
    }

    /// The member's path as stored (may start with "./" or end with "/").
    public var path: String
    /// What the member is.
    public var kind: Kind
    /// Permission bits, including setuid, setgid and sticky (07777).
    public var mode: UInt32
    /// Numeric owner.
    public var uid: UInt32
    /// Numeric group.
    public var gid: UInt32
    /// Bytes of data that follow the header (regular files only, in practice).
    public var size: Int64
    /// Modification time, seconds since 1970.
    public var mtime: Int64
    /// A symlink's target or a hard link's target path; empty otherwise.
    public var linkTarget: String
    /// Device numbers of character and block devices.
    public var deviceMajor: UInt32
    /// Device numbers of character and block devices.
    public var deviceMinor: UInt32
    /// Extended attributes from pax `SCHILY.xattr.*` records (e.g. file capabilities).
    public var xattrs: [String: [UInt8]]
}

/// A streaming tar reader: ustar, pax extended headers (`path`, `linkpath`, `size`, `uid`, `gid`,
/// `mtime`, `SCHILY.xattr.*`) and GNU long names ('L', 'K'). It reads the file descriptor in
/// chunks and never holds more than one chunk of an archive (plus one header's extensions) in memory.
public final class TarReader {
    private let fd: Int32
    private let label: String
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    private var atEOF = false
    private let seekable: Bool
    /// Data bytes of the current entry not yet read, then the padding to the next 512-byte block.
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    private var finished = false

    private static let block = 512
    /// Extension headers larger than this are refused: a hostile archive must not exhaust memory.
    private static let maxExtensionBytes: Int64 = 1 << 20

    /// Reads from `fileHandle` (a file or a pipe) in chunks of `chunkSize` bytes; `label` names the
    /// archive in errors. The caller keeps the handle open while reading.
    public init(fileHandle: FileHandle, label: String, chunkSize: Int = 1 << 20) {
        fd = fileHandle.fileDescriptor
        self.label = label
        buffer = [UInt8](repeating: 0, count: max(chunkSize, 2 * TarReader.block))
        seekable = lseek(fileHandle.fileDescriptor, 0, SEEK_CUR) >= 0
    }

    /// The next entry, or nil at the end of the archive. Unread data of the previous entry is skipped.
    public func next() throws -> TarEntry? {
        guard !finished else { return nil }
        try skipRest()
        var pax: [String: [UInt8]] = [:]
        var longName: String?
        var longLink: String?
        while true {
            guard try fill(TarReader.block) else {
                // A missing end-of-archive marker is tolerated at a block boundary, as GNU tar does.
                if end - start == 0, pax.isEmpty, longName == nil, longLink == nil {
                    finished = true
                    return nil
                }
                throw StasisError(.corrupted, "\(label) is truncated (it ends inside a header)")
            }
            let header = Array(buffer[start ..< start + TarReader.block])
            start += TarReader.block
            if header.allSatisfy({ $0 == 0 }) {
                finished = true
                return nil
            }
            try verifyChecksum(header)
            let type = header[156]
            let size = try number(header, 124, 12, field: "size")
            guard size >= 0 else { throw StasisError(.corrupted, "\(label) has a header with a negative size") }
            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K"):
                guard size <= TarReader.maxExtensionBytes else {
                    throw StasisError(.corrupted, "\(label) has an extension header of \(size) bytes (more than 1 MiB)")
                }
                let data = try readExtension(Int(size))
                switch type {
                case UInt8(ascii: "x"): try parsePax(data, into: &pax)
                case UInt8(ascii: "L"): longName = try text(data.prefix { $0 != 0 }, what: "long name")
                case UInt8(ascii: "K"): longLink = try text(data.prefix { $0 != 0 }, what: "long link name")
                default: break // Global pax headers carry nothing a root filesystem needs.
                }
                continue
            default:
                return try makeEntry(header, type: type, size: size, pax: pax, longName: longName, longLink: longLink)
            }
        }
    }

    /// Streams the current entry's data to `body` in chunks; each chunk is valid only during the call.
    public func readContents(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        while remaining > 0 {
            guard try fill(1) else { throw StasisError(.corrupted, "\(label) is truncated (it ends inside a file's data)") }
            let n = Int(min(Int64(end - start), remaining))
            try buffer.withUnsafeBytes { raw in
                try body(UnsafeRawBufferPointer(rebasing: raw[start ..< start + n]))
            }
            start += n
            remaining -= Int64(n)
        }
    }

    /// The current entry's whole data; for small members only (manifests, test fixtures).
    public func readAllContents() throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Int(remaining))
        try readContents { out.append(contentsOf: $0) }
        return out
    }

    // MARK: - Entries

    private func makeEntry(_ h: [UInt8], type: UInt8, size headerSize: Int64, pax: [String: [UInt8]], longName: String?, longLink: String?) throws -> TarEntry {
        let isPosixUstar = h[257 ..< 263].elementsEqual(Array("ustar\0".utf8))
        var path: String
        if let value = pax["path"] {
            path = try text(value[...], what: "pax path")
        } else if let longName {
            path = longName
        } else {
            let name = try cString(h, 0, 100, what: "name")
            // Only POSIX ustar has a prefix field; GNU tar keeps times there.
            let prefix = isPosixUstar ? try cString(h, 345, 155, what: "prefix") : ""
            path = prefix.isEmpty ? name : prefix + "/" + name
        }
        var linkTarget: String
        if let value = pax["linkpath"] {
            linkTarget = try text(value[...], what: "pax linkpath")
        } else if let longLink {
            linkTarget = longLink
        } else {
            linkTarget = try cString(h, 157, 100, what: "link name")
        }
        var size = headerSize
        if let value = pax["size"] { size = try paxNumber(value, key: "size", path: path) }
        var uid = try number(h, 108, 8, field: "uid")
        if let value = pax["uid"] { uid = try paxNumber(value, key: "uid", path: path) }
        var gid = try number(h, 116, 8, field: "gid")
        if let value = pax["gid"] { gid = try paxNumber(value, key: "gid", path: path) }
        var mtime = try number(h, 136, 12, field: "mtime")
        if let value = pax["mtime"] {
            // pax times may have a fraction ("1700000000.5"): whole seconds are enough here.
            let whole = value.prefix { $0 != UInt8(ascii: ".") }
            mtime = try paxNumber(Array(whole), key: "mtime", path: path)
        }
        guard (0 ... Int64(UInt32.max)).contains(uid), (0 ... Int64(UInt32.max)).contains(gid), size >= 0 else {
            throw StasisError(.corrupted, "\(label): entry '\(path)' has an out-of-range uid, gid or size")
        }
        if pax.keys.contains(where: { $0.hasPrefix("GNU.sparse.") }) {
            throw StasisError(.unsupported, "\(label): entry '\(path)' is a GNU sparse file, which is not supported; repack without --sparse")
        }
        let kind: TarEntry.Kind
        switch type {
        case UInt8(ascii: "0"), 0, UInt8(ascii: "7"):
            // Pre-POSIX archives mark folders with a trailing slash on a regular entry.
            kind = path.hasSuffix("/") ? .directory : .regular
        case UInt8(ascii: "1"): kind = .hardLink
        case UInt8(ascii: "2"): kind = .symlink
        case UInt8(ascii: "3"): kind = .characterDevice
        case UInt8(ascii: "4"): kind = .blockDevice
        case UInt8(ascii: "5"): kind = .directory
        case UInt8(ascii: "6"): kind = .fifo
        default:
            let shown = (32 ..< 127).contains(type) ? String(UnicodeScalar(type)) : "\\(\(type))"
            throw StasisError(.unsupported, "\(label): entry '\(path)' has tar type '\(shown)', which is not supported")
        }
        let isDevice = kind == .characterDevice || kind == .blockDevice
        let major = isDevice ? try number(h, 329, 8, field: "devmajor") : 0
        let minor = isDevice ? try number(h, 337, 8, field: "devminor") : 0
        var xattrs: [String: [UInt8]] = [:]
        for (key, value) in pax where key.hasPrefix("SCHILY.xattr.") {
            xattrs[String(key.dropFirst("SCHILY.xattr.".count))] = value
        }
        // Links, devices and folders carry no data even if a header claims some; skipping keeps us aligned.
        remaining = size
        padding = (TarReader.blockRoundUp(size) - size)
        return TarEntry(
            path: path, kind: kind, mode: UInt32(try number(h, 100, 8, field: "mode") & 0o7777),
            uid: UInt32(uid), gid: UInt32(gid), size: kind == .regular ? size : 0, mtime: mtime,
            linkTarget: linkTarget, deviceMajor: UInt32(truncatingIfNeeded: major), deviceMinor: UInt32(truncatingIfNeeded: minor),
            xattrs: xattrs)
    }

    private static func blockRoundUp(_ n: Int64) -> Int64 { (n + 511) / 512 * 512 }

    // MARK: - Buffering

    /// Makes at least `count` bytes available in the buffer; false if the archive ends first.
    private func fill(_ count: Int) throws -> Bool {
        if end - start >= count { return true }
        if start > 0 {
            // Compact: move the unread tail to the front so the next read has room.
            let unread = end - start
            if unread > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    guard let base = raw.baseAddress else { return }
                    memmove(base, base + start, unread)
                }
            }
            start = 0
            end = unread
        }
        while end - start < count, !atEOF {
            let n = buffer.withUnsafeMutableBytes { raw -> Int in
                guard let base = raw.baseAddress else { return 0 }
                return read(fd, base + end, raw.count - end)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw StasisError(.ioFailure, "cannot read \(label)", cause: Errno())
            }
            if n == 0 { atEOF = true } else { end += n }
        }
        return end - start >= count
    }

    /// Skips the unread data and padding of the current entry, seeking where the input allows it.
    private func skipRest() throws {
        var toSkip = remaining + padding
        remaining = 0
        padding = 0
        let buffered = Int64(end - start)
        if toSkip <= buffered {
            start += Int(toSkip)
            return
        }
        toSkip -= buffered
        start = 0
        end = 0
        if seekable {
            guard lseek(fd, off_t(toSkip), SEEK_CUR) >= 0 else {
                throw StasisError(.ioFailure, "cannot seek in \(label)", cause: Errno())
            }
            return
        }
        while toSkip > 0 {
            guard try fill(1) else { throw StasisError(.corrupted, "\(label) is truncated (it ends inside a file's data)") }
            let n = min(Int64(end - start), toSkip)
            start += Int(n)
            toSkip -= n
        }
    }

    private func readExtension(_ size: Int) throws -> [UInt8] {
        remaining = Int64(size)
        padding = TarReader.blockRoundUp(Int64(size)) - Int64(size)
        let data = try readAllContents()
        try skipRest()
        return data
    }

    // MARK: - Header fields

    private func verifyChecksum(_ h: [UInt8]) throws {
        let stored = try number(h, 148, 8, field: "checksum")
        var unsigned: Int64 = 0
        var signed: Int64 = 0
        for (i, b) in h.enumerated() {
            let v = (148 ..< 156).contains(i) ? UInt8(ascii: " ") : b
            unsigned += Int64(v)
            signed += Int64(Int8(bitPattern: v))
        }
        // Some old tars summed signed bytes; accept either, as GNU tar does.
        guard stored == unsigned || stored == signed else {
            throw StasisError(.corrupted, "\(label) has a header with a bad checksum: is it really a tar archive?")
        }
    }

    /// Octal ASCII, or GNU base-256 when the top bit of the first byte is set.
    private func number(_ h: [UInt8], _ offset: Int, _ length: Int, field: String) throws -> Int64 {
        let bytes = h[offset ..< offset + length]
        if let first = bytes.first, first & 0x80 != 0 {
            let negative = first & 0x40 != 0
            var value: Int64 = negative ? -1 : 0
            for (i, b) in bytes.enumerated() {
                let byte = i == 0 ? (negative ? b : b & 0x7f) : b
                guard value.magnitude < (UInt64(1) << 55) else {
                    throw StasisError(.corrupted, "\(label) has a \(field) field too large to read")
                }
                value = (value << 8) | Int64(byte)
            }
            return value
        }
        var value: Int64 = 0
        var seenDigit = false
        for b in bytes {
            switch b {
            case UInt8(ascii: "0") ... UInt8(ascii: "7"):
                guard value < (Int64(1) << 59) else { throw StasisError(.corrupted, "\(label) has a \(field) field too large to read") }
                value = value * 8 + Int64(b - UInt8(ascii: "0"))
                seenDigit = true
            case UInt8(ascii: " ") where !seenDigit:
                continue
            case 0, UInt8(ascii: " "):
                return value
            default:
                throw StasisError(.corrupted, "\(label) has a header with an unreadable \(field) field: is it really a tar archive?")
            }
        }
        return value
    }

    private func cString(_ h: [UInt8], _ offset: Int, _ length: Int, what: String) throws -> String {
        try text(h[offset ..< offset + length].prefix { $0 != 0 }, what: what)
    }

    /// Names must be valid UTF-8: repairing them would silently change which file is written.
    private func text(_ bytes: some Collection<UInt8>, what: String) throws -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw StasisError(.unsupported, "\(label) has a \(what) that is not valid UTF-8")
        }
        return s
    }

    private func paxNumber(_ value: [UInt8], key: String, path: String) throws -> Int64 {
        guard let s = String(validating: value, as: UTF8.self), let n = Int64(s) else {
            throw StasisError(.corrupted, "\(label): entry '\(path)' has an unreadable pax \(key)")
        }
        return n
    }

    /// Records are "LENGTH key=value\n", LENGTH counting the whole record; values may be binary.
    private func parsePax(_ data: [UInt8], into pax: inout [String: [UInt8]]) throws {
        var i = 0
        while i < data.count {
            var length = 0
            var j = i
            while j < data.count, data[j] >= UInt8(ascii: "0"), data[j] <= UInt8(ascii: "9"), length < 1 << 21 {
                length = length * 10 + Int(data[j] - UInt8(ascii: "0"))
                j += 1
            }
            guard j < data.count, data[j] == UInt8(ascii: " "), length > j - i, i + length <= data.count,
                  data[i + length - 1] == UInt8(ascii: "\n")
            else { throw StasisError(.corrupted, "\(label) has a malformed pax header") }
            let record = data[(j + 1) ..< (i + length - 1)]
            guard let eq = record.firstIndex(of: UInt8(ascii: "=")) else {
                throw StasisError(.corrupted, "\(label) has a malformed pax record")
            }
            let key = try text(record[record.startIndex ..< eq], what: "pax key")
            pax[key] = Array(record[(eq + 1)...])
            i += length
        }
    }
}
