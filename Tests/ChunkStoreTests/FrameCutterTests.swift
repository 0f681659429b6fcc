import Foundation
@testable import ChunkStore
import StasisCore
import Testing

@Suite struct FrameCutterTests {
    /// A 64 MiB sparse file: data at unaligned offsets, a page of zeros written out (allocated
    /// but zero), a repeated frame, and a short tail.
    @discardableResult
    static func makeSample(_ url: URL, seed: UInt64 = 7, size: Int = 64 << 20 | 1234) throws -> [(offset: Int, bytes: [UInt8])] {
        var rng = SeededGenerator(seed: seed)
        let repeated = sampleBytes(64 << 10, &rng)
        let regions: [(offset: Int, bytes: [UInt8])] = [
            (0, sampleBytes(10_000, &rng)),
            (1 << 20 | 777, sampleBytes(300_000, &rng)),
            (8 << 20, [UInt8](repeating: 0, count: 128 << 10)),
            (16 << 20, repeated),
            (32 << 20, repeated),
            (40 << 20 | 4095, sampleBytes(2, &rng)),
            (size - 100, sampleBytes(100, &rng)),
        ]
        try makeSparseFile(url, size: size, regions: regions)
        return regions
    }

    @Test(arguments: [4096, 65536, 2 << 20])
    func cutAndMaterializeGiveTheSameBytesAndStaySparse(frameSize: Int) throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("memory")
        let regions = try Self.makeSample(source)
        let store = try ChunkStore(root: dir)
        let result = try FrameCutter(store: store, frameSize: frameSize).cut(source)
        let frames = result.frames
        #expect(frames.totalSize == 64 << 20 | 1234)
        #expect(frames.frameCount == (frames.totalSize + frameSize - 1) / frameSize)
        #expect(frames.nonZeroFrames.count + result.zeroFrames == frames.frameCount)
        #expect(result.bytesRead < 4 << 20 + 8 * frameSize, "holes were read: \(result.bytesRead)")
        #expect(result.reusedFrames >= 1, "the repeated 64 KiB region is stored once")
        #expect(try store.storedBytes() == result.newBytes)
        #expect(try store.allHashes().count == result.newChunks)

        let copy = dir.appendingPathComponent("copy")
        try ChunkedFile(store: store, frames: frames).materialize(to: copy)
        #expect(try contents(copy) == contents(source))
        let data = regions.map(\.bytes.count).reduce(0, +)
        let allocated = try allocatedBytes(copy)
        #expect(allocated <= data + regions.count * 2 * max(frameSize, 4096), "not sparse: \(allocated) bytes allocated")
        #expect(try listing(dir).sorted() == ["chunks", "copy", "memory"], "temporary file left behind")
    }

    @Test func identicalFramesAcrossTwoFilesAreStoredOnce() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SeededGenerator(seed: 11)
        let shared = sampleBytes(1 << 20, &rng)
        let onlyA = sampleBytes(256 << 10, &rng)
        let onlyB = sampleBytes(128 << 10, &rng)
        let a = dir.appendingPathComponent("a")
        let b = dir.appendingPathComponent("b")
        try makeSparseFile(a, size: 16 << 20, regions: [(0, shared), (4 << 20, onlyA)])
        try makeSparseFile(b, size: 16 << 20, regions: [(2 << 20, shared), (8 << 20, onlyB)])
        let store = try ChunkStore(root: dir.appendingPathComponent("home"))
        let cutter = try FrameCutter(store: store, frameSize: 16 << 10)
        let first = try cutter.cut(a)
        #expect(first.newChunks == (1 << 20 + 256 << 10) / (16 << 10))
        #expect(first.reusedFrames == 0)
        let afterA = try store.storedBytes()
        let second = try cutter.cut(b)
        #expect(second.newChunks == (128 << 10) / (16 << 10), "only B's own frames are new")
        #expect(second.reusedFrames == (1 << 20) / (16 << 10))
        #expect(try store.storedBytes() == afterA + second.newBytes)
        #expect(try store.allHashes().count == first.newChunks + second.newChunks)
        // Cutting A again stores nothing.
        let again = try cutter.cut(a)
        #expect(again.newChunks == 0 && again.newBytes == 0)
        #expect(again.frames == first.frames)
    }

    @Test func framesOfOneFileThatRepeatAreStoredOnce() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("f")
        let page = [UInt8](repeating: 0xCC, count: 4096)
        try makeSparseFile(file, size: 4 << 20, regions: [(0, Array([[UInt8]](repeating: page, count: 256).joined()))])
        let store = try ChunkStore(root: dir)
        let result = try FrameCutter(store: store, frameSize: 4096, workers: 4).cut(file)
        #expect(result.newChunks == 1)
        #expect(result.reusedFrames == 255)
        #expect(result.frames.chunks.count == 1)
        #expect(result.frames.nonZeroFrames == Array(0 ..< 256))
    }

    @Test func aDamagedChunkFailsMaterializeNamingFrameAndHash() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("memory")
        try Self.makeSample(source)
        let store = try ChunkStore(root: dir)
        let frames = try FrameCutter(store: store, frameSize: 65536).cut(source).frames
        let index = (32 << 20) / 65536  // the second copy of the repeated region shares its chunk
        let ref = try #require(frames.chunk(ofFrame: index))
        try flipByte(of: store.path(of: ref.hash), at: ref.storedSize / 2)
        let file = ChunkedFile(store: store, frames: frames, workers: 3)
        let copy = dir.appendingPathComponent("copy")
        let error = #expect(throws: StasisError.self) { try file.materialize(to: copy) }
        #expect(error?.code == .corrupted)
        let message = error?.description ?? ""
        #expect(message.contains(ref.hash))
        #expect(message.contains("frame \(index)") || message.contains("frame \((16 << 20) / 65536)"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: copy.path))
        #expect(try listing(dir) == ["chunks", "memory"], "temporary file left behind")

        let read = #expect(throws: StasisError.self) { try file.readFrame(index) }
        #expect(read?.code == .corrupted)
        #expect(read?.description.contains("frame \(index)") == true && read?.description.contains(ref.hash) == true)
        #expect((#expect(throws: StasisError.self) { try file.verify() })?.code == .corrupted)
    }

    @Test func aMissingChunkIsNotFound() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("memory")
        try Self.makeSample(source)
        let store = try ChunkStore(root: dir)
        let frames = try FrameCutter(store: store, frameSize: 4096).cut(source).frames
        let ref = try #require(frames.chunk(ofFrame: frames.frameCount - 1))
        #expect(try store.remove(ref.hash))
        let error = #expect(throws: StasisError.self) {
            try ChunkedFile(store: store, frames: frames).materialize(to: dir.appendingPathComponent("copy"))
        }
        #expect(error?.code == .notFound)
        #expect(error?.description.contains("frame \(frames.frameCount - 1)") == true)
    }

    @Test func readFrameAndPartialMaterialize() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("memory")
        try Self.makeSample(source)
        let original = try contents(source)
        let store = try ChunkStore(root: dir)
        let frames = try FrameCutter(store: store, frameSize: 16384).cut(source).frames
        let file = ChunkedFile(store: store, frames: frames)
        let codec = try Zstd()
        for index in [0, 1, 64, 65, 100, 512, 2048, frames.frameCount - 1] {
            let start = index * 16384
            #expect(try file.readFrame(index, codec: codec) == Array(original[start ..< min(start + 16384, original.count)]), "frame \(index)")
        }
        #expect((#expect(throws: StasisError.self) { try file.readFrame(frames.frameCount) })?.code == .invalidArgument)

        // Lazy restore: a fresh sparse file gets only the frames asked for.
        let lazy = dir.appendingPathComponent("lazy")
        try makeSparseFile(lazy, size: frames.totalSize, regions: [])
        let wanted = [65, 66, 67, 3]
        try file.materialize(frames: wanted, into: lazy)
        let filled = try contents(lazy)
        for index in 0 ..< frames.frameCount {
            let range = index * 16384 ..< min(index * 16384 + 16384, original.count)
            let expected = wanted.contains(index) ? Array(original[range]) : [UInt8](repeating: 0, count: range.count)
            #expect(Array(filled[range]) == expected, "frame \(index)")
        }
        try file.verify()
    }

    @Test func emptyAndTinyFiles() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        for (name, bytes) in [("empty", [UInt8]()), ("tiny", [UInt8]([1, 2, 3])), ("zeros", [UInt8](repeating: 0, count: 10_000))] {
            let url = dir.appendingPathComponent(name)
            try Data(bytes).write(to: url)
            let frames = try FrameCutter(store: store, frameSize: 4096).cut(url).frames
            #expect(frames.totalSize == bytes.count)
            let copy = dir.appendingPathComponent(name + ".copy")
            try ChunkedFile(store: store, frames: frames).materialize(to: copy)
            #expect(try contents(copy) == bytes, "\(name)")
        }
    }

    @Test func frameListRoundTripsAndItsDigestIgnoresCompression() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("memory")
        try Self.makeSample(source)
        let fast = try FrameCutter(store: ChunkStore(root: dir.appendingPathComponent("1"), level: 1), frameSize: 4096).cut(source).frames
        let small = try FrameCutter(store: ChunkStore(root: dir.appendingPathComponent("19"), level: 19), frameSize: 4096).cut(source).frames
        #expect(fast.digest == small.digest)
        #expect(fast.storedBytes > small.storedBytes)
        let json = try JSONEncoder().encode(fast)
        #expect(try JSONDecoder().decode(FrameList.self, from: json) == fast)
        #expect(json.count < 100_000, "zero runs should keep a 64 MiB file's list small: \(json.count)")
        let other = try FrameCutter(store: ChunkStore(root: dir.appendingPathComponent("1")), frameSize: 8192).cut(source).frames
        #expect(other.digest != fast.digest)
    }

    @Test func refusesBadFrameSizes() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        for size in [0, 2048, 5000, 4 << 20] {
            #expect(throws: StasisError.self) { try FrameCutter(store: store, frameSize: size) }
        }
    }
}
