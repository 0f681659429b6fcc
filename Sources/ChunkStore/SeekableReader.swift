import Foundation
import StasisCore

/// Reads a file in the zstd seekable format: parses its seek table once, then decompresses any
/// frame by its offset, checking its size and (when the table has them) its checksum. Not
/// Sendable: it owns a zstd context; give each thread its own reader.
public final class SeekableReader {
    /// The file's seek table.
    public let table: SeekTable

    private let source: Source
    private let codec: Zstd

    private enum Source {
        case file(Int32)
        case memory([UInt8])
    }

    /// Opens the seekable file at `url`.
    public convenience init(url: URL) throws {
        let fd = try FileIO.openForReading(url.path)
        do {
            let size = try FileIO.size(fd, path: url.path)
            try self.init(source: .file(fd), size: size)
        } catch {
            close(fd)
            throw error
        }
    }

    /// Reads a seekable file held in memory.
    public convenience init(bytes: [UInt8]) throws {
        try self.init(source: .memory(bytes), size: bytes.count)
    }

    private init(source: Source, size: Int) throws {
        self.source = source
        codec = try Zstd()
        table = try SeekTable.read(fileSize: size) { offset, count in try SeekableReader.read(source, offset, count) }
    }

    deinit {
        if case .file(let fd) = source { close(fd) }
    }

    /// The number of frames.
    public var frameCount: Int { table.frameCount }

    /// The content of frame `index`.
    public func frame(_ index: Int) throws -> [UInt8] {
        guard index >= 0, index < table.frameCount else {
            throw StasisError(.invalidArgument, "frame \(index) is outside 0..<\(table.frameCount)")
        }
        let entry = table.entries[index]
        let compressed = try SeekableReader.read(source, table.compressedOffsets[index], entry.compressedSize)
        let content: [UInt8]
        do {
            content = try codec.decompress(compressed, expectedSize: entry.decompressedSize, maxSize: SeekTable.maxFrameContentSize)
        } catch {
            throw StasisError(.corrupted, "seekable frame \(index) is damaged", cause: error)
        }
        if let checksum = entry.checksum {
            let actual = content.withUnsafeBytes(XXH64.checksum32)
            guard actual == checksum else {
                throw StasisError(.corrupted, "seekable frame \(index) has checksum \(hex(actual)); the seek table says \(hex(checksum))")
            }
        }
        return content
    }

    private func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }

    private static func read(_ source: Source, _ offset: Int, _ count: Int) throws -> [UInt8] {
        switch source {
        case .file(let fd):
            return try FileIO.readExactly(fd, count: count, at: offset)
        case .memory(let bytes):
            guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else {
                throw StasisError(.corrupted, "\(count) bytes at offset \(offset) lie outside \(bytes.count) bytes")
            }
            return Array(bytes[offset ..< offset + count])
        }
    }
}
