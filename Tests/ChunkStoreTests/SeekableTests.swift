import Foundation
@testable import ChunkStore
import StasisCore
import Testing

@Suite struct SeekableTests {
    @Test(arguments: [4096, 65536])
    func exportPassesTheZstdToolAndReadsFrameByFrame(frameSize: Int) throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("memory")
        try FrameCutterTests.makeSample(source, size: 16 << 20 | 999)
        let original = try contents(source)
        let store = try ChunkStore(root: dir)
        let frames = try FrameCutter(store: store, frameSize: frameSize).cut(source).frames
        let export = dir.appendingPathComponent("memory.zst")
        try ChunkedFile(store: store, frames: frames).exportSeekable(to: export)

        let test = try zstdTool(["-q", "-t", export.path])
        #expect(test.status == 0, "zstd -t: \(test.errors)")
        let out = dir.appendingPathComponent("memory.out")
        let decompress = try zstdTool(["-q", "-d", export.path, "-o", out.path])
        #expect(decompress.status == 0, "zstd -d: \(decompress.errors)")
        #expect(try contents(out) == original)

        let reader = try SeekableReader(url: export)
        #expect(reader.frameCount == frames.frameCount)
        #expect(reader.table.hasChecksums)
        #expect(reader.table.decompressedOffsets.last == original.count)
        for index in [0, 1, frames.frameCount / 2, (16 << 20) / frameSize, frames.frameCount - 1] {
            let start = index * frameSize
            #expect(try reader.frame(index) == Array(original[start ..< min(start + frameSize, original.count)]), "frame \(index)")
            #expect(reader.table.frameIndex(containing: start) == index)
            #expect(reader.table.frameIndex(containing: start + frames.rawSize(ofFrame: index) - 1) == index)
        }
        #expect(reader.table.frameIndex(containing: original.count) == nil)
        #expect((#expect(throws: StasisError.self) { try reader.frame(frames.frameCount) })?.code == .invalidArgument)
    }

    @Test func writerWithoutChecksumsAndItsTableLayout() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("plain.zst")
        let zstd = try Zstd()
        let parts: [[UInt8]] = [Array("hello, ".utf8), Array(repeating: 0x41, count: 10_000), Array("world".utf8)]
        let writer = try SeekableWriter(url: url, checksums: false)
        for part in parts { try writer.append(frame: zstd.compress(part), decompressedSize: part.count) }
        #expect(throws: StasisError.self) { try writer.append(frame: zstd.compress(parts[0]), decompressedSize: 7, checksum: 1) }
        #expect(throws: StasisError.self) { try writer.append(frame: zstd.compress(parts[0]), decompressedSize: 8) }
        try writer.finish()
        #expect(try listing(dir) == ["plain.zst"])

        let bytes = try contents(url)
        // Footer: 3 frames, descriptor 0 (no checksums), magic 0x8F92EAB1 little-endian.
        #expect(Array(bytes.suffix(9)) == [3, 0, 0, 0, 0, 0xB1, 0xEA, 0x92, 0x8F])
        let tableStart = bytes.count - (8 + 3 * 8 + 9)
        #expect(Array(bytes[tableStart ..< tableStart + 8]) == [0x5E, 0x2A, 0x4D, 0x18, 33, 0, 0, 0])
        #expect(try zstdTool(["-q", "-t", url.path]).status == 0)
        let out = dir.appendingPathComponent("out")
        #expect(try zstdTool(["-q", "-d", url.path, "-o", out.path]).status == 0)
        #expect(try contents(out) == Array(parts.joined()))

        let reader = try SeekableReader(bytes: bytes)
        #expect(!reader.table.hasChecksums)
        #expect(try (0 ..< 3).map { try reader.frame($0) } == parts)
    }

    @Test func anAbandonedWriterLeavesNothing() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            let writer = try SeekableWriter(url: dir.appendingPathComponent("x.zst"), checksums: true)
            let frame = try Zstd().compress([1, 2, 3])
            try writer.append(frame: frame, decompressedSize: 3, checksum: XXH64.checksum32(UnsafeRawBufferPointer(start: nil, count: 0)))
        }
        #expect(try listing(dir) == [])
    }

    @Test func aWrongChecksumInTheTableIsCorruption() throws {
        let zstd = try Zstd()
        let content: [UInt8] = Array(repeating: 9, count: 5000)
        let frame = try zstd.compress(content)
        let checksum = content.withUnsafeBytes(XXH64.checksum32)
        let table = try SeekTable(entries: [SeekTable.Entry(compressedSize: frame.count, decompressedSize: 5000, checksum: checksum ^ 1)], hasChecksums: true)
        let reader = try SeekableReader(bytes: frame + table.encoded())
        let error = #expect(throws: StasisError.self) { try reader.frame(0) }
        #expect(error?.code == .corrupted)
        let good = try SeekTable(entries: [SeekTable.Entry(compressedSize: frame.count, decompressedSize: 5000, checksum: checksum)], hasChecksums: true)
        #expect(try SeekableReader(bytes: frame + good.encoded()).frame(0) == content)
    }

    @Test func refusesTablesThatDoNotAddUp() throws {
        let frame = try Zstd().compress([UInt8](repeating: 3, count: 100))
        let cases: [(String, [UInt8])] = [
            ("not seekable", frame),
            ("frames shorter than the data", [0] + frame + (try SeekTable(entries: [.init(compressedSize: frame.count, decompressedSize: 100)], hasChecksums: false).encoded())),
            ("frames longer than the data", Array(frame.dropFirst()) + (try SeekTable(entries: [.init(compressedSize: frame.count, decompressedSize: 100)], hasChecksums: false).encoded())),
            ("reserved bit", { var t = frame + (try! SeekTable(entries: [.init(compressedSize: frame.count, decompressedSize: 100)], hasChecksums: false).encoded()); t[t.count - 5] = 0x04; return t }()),
            ("huge count", { var t = frame + (try! SeekTable(entries: [.init(compressedSize: frame.count, decompressedSize: 100)], hasChecksums: false).encoded()); t[t.count - 6] = 0x7F; return t }()),
            ("short", [0xB1, 0xEA, 0x92, 0x8F]),
        ]
        for (name, bytes) in cases {
            let error = #expect(throws: StasisError.self, "\(name)") { try SeekableReader(bytes: bytes) }
            #expect(error?.code == .corrupted, "\(name)")
        }
    }
}
