import StasisCore

/// The seek table of the zstd seekable format (facebook/zstd contrib/seekable_format): a
/// skippable frame at the end of the file listing each frame's compressed and decompressed size
/// and, optionally, the low 32 bits of the XXH64 of its content. Plain `zstd -d` skips it.
///
/// Layout: skippable magic 0x184D2A5E (u32 LE), frame size (u32 LE), the entries (u32 compressed
/// size, u32 decompressed size, [u32 checksum]), then the 9-byte footer: number of frames (u32),
/// descriptor (bit 7: checksums; bits 6-2 reserved, zero), seekable magic 0x8F92EAB1.
public struct SeekTable: Equatable, Sendable {
    /// The magic of the skippable frame holding the table.
    public static let skippableMagic: UInt32 = 0x184D_2A5E
    /// The last four bytes of a seekable file.
    public static let seekableMagic: UInt32 = 0x8F92_EAB1
    /// Bytes of the footer.
    public static let footerSize = 9
    /// The format's limit on frames.
    public static let maxFrames = 0x800_0000
    /// The format's limit on one frame's content.
    public static let maxFrameContentSize = 1 << 30

    /// One frame's entry.
    public struct Entry: Equatable, Sendable {
        /// The frame's length in the file.
        public var compressedSize: Int
        /// The length of its content.
        public var decompressedSize: Int
        /// The low 32 bits of the XXH64 of its content, when the table has checksums.
        public var checksum: UInt32?

        /// An entry.
        public init(compressedSize: Int, decompressedSize: Int, checksum: UInt32? = nil) {
            self.compressedSize = compressedSize
            self.decompressedSize = decompressedSize
            self.checksum = checksum
        }
    }

    /// The entries, in file order.
    public let entries: [Entry]
    /// Whether every entry carries a checksum (descriptor bit 7).
    public let hasChecksums: Bool
    /// Where each frame starts in the file; one more element: where the table starts.
    public let compressedOffsets: [Int]
    /// Where each frame's content starts in the decompressed data; one more element: its size.
    public let decompressedOffsets: [Int]

    /// A table of `entries`; all of them carry a checksum or none does.
    public init(entries: [Entry], hasChecksums: Bool) throws {
        guard entries.count <= SeekTable.maxFrames else {
            throw StasisError(.invalidArgument, "\(entries.count) frames exceed the seekable format's \(SeekTable.maxFrames)")
        }
        var compressed = [0]
        var decompressed = [0]
        compressed.reserveCapacity(entries.count + 1)
        decompressed.reserveCapacity(entries.count + 1)
        for (i, entry) in entries.enumerated() {
            guard entry.compressedSize >= 0, entry.compressedSize <= Int(UInt32.max),
                  entry.decompressedSize >= 0, entry.decompressedSize <= SeekTable.maxFrameContentSize,
                  (entry.checksum != nil) == hasChecksums
            else {
                throw StasisError(.invalidArgument, "seek table entry \(i) (\(entry)) does not fit the format")
            }
            // No overflow: at most 2^27 entries of at most 2^32 bytes each.
            compressed.append(compressed[i] + entry.compressedSize)
            decompressed.append(decompressed[i] + entry.decompressedSize)
        }
        self.entries = entries
        self.hasChecksums = hasChecksums
        self.compressedOffsets = compressed
        self.decompressedOffsets = decompressed
    }

    /// The number of frames.
    public var frameCount: Int { entries.count }
    /// Bytes of one entry.
    public var entrySize: Int { hasChecksums ? 12 : 8 }
    /// Bytes of the whole skippable frame, header included.
    public var encodedSize: Int { 8 + entries.count * entrySize + SeekTable.footerSize }

    /// The skippable frame, ready to append after the frames.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(encodedSize)
        func put(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) } }
        put(SeekTable.skippableMagic)
        put(UInt32(encodedSize - 8))
        for entry in entries {
            put(UInt32(entry.compressedSize))
            put(UInt32(entry.decompressedSize))
            if let checksum = entry.checksum { put(checksum) }
        }
        put(UInt32(entries.count))
        out.append(hasChecksums ? 0x80 : 0)
        put(SeekTable.seekableMagic)
        return out
    }

    /// The index of the frame holding decompressed byte `offset`, or nil past the end.
    public func frameIndex(containing offset: Int) -> Int? {
        guard offset >= 0, let total = decompressedOffsets.last, offset < total else { return nil }
        var low = 0
        var high = entries.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if decompressedOffsets[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// Reads the table at the end of a file of `fileSize` bytes through `read(offset, count)`.
    /// Everything is checked before it is trusted: magics, reserved bits, a table that fits in
    /// the file, sizes within the format's limits, and frames that exactly fill the space before
    /// the table. A damaged or truncated table is `.corrupted`; nothing larger than the file is
    /// ever read or allocated.
    public static func read(fileSize: Int, maxFrames: Int = SeekTable.maxFrames, _ read: (_ offset: Int, _ count: Int) throws -> [UInt8]) throws -> SeekTable {
        guard fileSize >= 8 + footerSize else {
            throw StasisError(.corrupted, "\(fileSize) bytes is too short for a zstd seek table")
        }
        let footer = try read(fileSize - footerSize, footerSize)
        guard footer.count == footerSize, u32(footer, 5) == seekableMagic else {
            throw StasisError(.corrupted, "no zstd seek table: the file does not end with the seekable magic 0x8F92EAB1")
        }
        let count = Int(u32(footer, 0))
        let descriptor = footer[4]
        guard descriptor & 0x7C == 0 else {
            throw StasisError(.corrupted, "zstd seek table descriptor 0x\(String(descriptor, radix: 16)) sets reserved bits")
        }
        guard count <= min(maxFrames, SeekTable.maxFrames) else {
            throw StasisError(.corrupted, "zstd seek table claims \(count) frames, more than \(min(maxFrames, SeekTable.maxFrames))")
        }
        let hasChecksums = descriptor & 0x80 != 0
        let entrySize = hasChecksums ? 12 : 8
        let tableBytes = count * entrySize
        let frameBytes = tableBytes + footerSize + 8
        guard frameBytes <= fileSize else {
            throw StasisError(.corrupted, "zstd seek table of \(count) frames needs \(frameBytes) bytes; the file has \(fileSize)")
        }
        let start = fileSize - frameBytes
        let header = try read(start, 8)
        guard header.count == 8, u32(header, 0) == skippableMagic, Int(u32(header, 4)) == tableBytes + footerSize else {
            throw StasisError(.corrupted, "zstd seek table does not start with a skippable frame header of its size")
        }
        let raw = try read(start + 8, tableBytes)
        guard raw.count == tableBytes else { throw StasisError(.corrupted, "zstd seek table is truncated") }
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        var total = 0
        for i in 0 ..< count {
            let at = i * entrySize
            let entry = Entry(
                compressedSize: Int(u32(raw, at)),
                decompressedSize: Int(u32(raw, at + 4)),
                checksum: hasChecksums ? u32(raw, at + 8) : nil
            )
            guard entry.decompressedSize <= maxFrameContentSize else {
                throw StasisError(.corrupted, "zstd seek table entry \(i) claims \(entry.decompressedSize) bytes, more than \(maxFrameContentSize)")
            }
            total += entry.compressedSize
            guard total <= start else {
                throw StasisError(.corrupted, "zstd seek table frames run past the table (frame \(i) ends at \(total), the table starts at \(start))")
            }
            entries.append(entry)
        }
        guard total == start else {
            throw StasisError(.corrupted, "zstd seek table frames cover \(total) bytes; \(start) bytes precede the table")
        }
        return try SeekTable(entries: entries, hasChecksums: hasChecksums)
    }

    private static func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }
}
