import ChunkStore
import Foundation
import StasisCore

/// Turns a tar stream into independent zstd frames of `SnapshotArchive.frameSize` bytes for a
/// seekable file. A frame of zeros (most of a sparse memory file) is compressed once and reused.
struct FrameWriter {
    private let writer: SeekableWriter
    private let codec: Zstd
    private var buffer: [UInt8] = []
    private var zeroFrame: [UInt8]?
    /// Bytes of tar stream written so far.
    private(set) var written: UInt64 = 0

    init(_ writer: SeekableWriter) throws {
        self.writer = writer
        self.codec = try Zstd()
        buffer.reserveCapacity(SnapshotArchive.frameSize)
    }

    /// A member whose content is `bytes`.
    mutating func file(_ name: String, bytes: [UInt8]) throws {
        try append(ArchiveTar.header(name: name, size: UInt64(bytes.count)))
        try append(bytes)
        try append([UInt8](repeating: 0, count: ArchiveTar.padding(UInt64(bytes.count))))
    }

    /// A member whose content is the file at `url`, read 1 MiB at a time.
    mutating func file(_ name: String, url: URL) throws {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: 0)
        try append(ArchiveTar.header(name: name, size: size))
        var left = size
        while left > 0 {
            guard let chunk = try handle.read(upToCount: Int(min(left, UInt64(SnapshotArchive.frameSize)))), !chunk.isEmpty else {
                throw StasisError(.ioFailure, "\(url.path) ended early while it was archived")
            }
            try append(Array(chunk))
            left -= UInt64(chunk.count)
        }
        try append([UInt8](repeating: 0, count: ArchiveTar.padding(size)))
    }

    /// The end of the tar stream and the last, partial frame.
    mutating func finish() throws {
        try append([UInt8](repeating: 0, count: 2 * ArchiveTar.block))
        if !buffer.isEmpty { try emit() }
    }

    private mutating func append(_ bytes: [UInt8]) throws {
        written += UInt64(bytes.count)
        var rest = bytes[...]
        while !rest.isEmpty {
            let take = min(rest.count, SnapshotArchive.frameSize - buffer.count)
            buffer.append(contentsOf: rest.prefix(take))
            rest = rest.dropFirst(take)
            if buffer.count == SnapshotArchive.frameSize { try emit() }
        }
    }

    private mutating func emit() throws {
        if buffer.count == SnapshotArchive.frameSize, isAllZero(buffer[...]) {
            if zeroFrame == nil { zeroFrame = try codec.compress(buffer) }
            if let zeroFrame { try writer.append(frame: zeroFrame, decompressedSize: buffer.count) }
        } else {
            try writer.append(frame: try codec.compress(buffer), decompressedSize: buffer.count)
        }
        buffer.removeAll(keepingCapacity: true)
    }
}
