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

/// Two granularities: a frame that differs from its base frame in a few pages is stored as the
/// base's chunk plus those pages.
@Suite struct PagePatchTests {
    /// The sample, then a copy with: 3 pages of one frame rewritten, one page of another frame
    /// zeroed, and a whole third frame rewritten.
    static func makeBaseAndChange(_ dir: URL) throws -> (base: URL, changed: URL) {
        let base = dir.appendingPathComponent("base")
        try FrameCutterTests.makeSample(base)
        var bytes = try contents(base)
        var rng = SeededGenerator(seed: 99)
        let patched = 1 << 20  // inside the 300,000-byte region at 1 MiB
        for page in [1, 2, 9] {
            let new = sampleBytes(4096, &rng)
            bytes.replaceSubrange(patched + page * 4096 ..< patched + (page + 1) * 4096, with: new)
        }
        let zeroed = (1 << 20) + 65536  // the next frame: one page zeroed
        bytes.replaceSubrange(zeroed + 4096 ..< zeroed + 8192, with: [UInt8](repeating: 0, count: 4096))
        let rewritten = (1 << 20) + 2 * 65536
        bytes.replaceSubrange(rewritten ..< rewritten + 65536, with: sampleBytes(65536, &rng))
        let changed = dir.appendingPathComponent("changed")
        try makeSparseFile(changed, size: bytes.count, regions: [(0, bytes)])
        return (base, changed)
    }

    @Test func aSmallChangeCostsItsPagesAndReadsBackExactly() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, changed) = try Self.makeBaseAndChange(dir)
        let store = try ChunkStore(root: dir)
        let cutter = try FrameCutter(store: store, frameSize: 65536)
        let first = try cutter.cut(base)
        let second = try cutter.cut(changed, base: first.frames)
        #expect(second.patchedFrames == 2)
        #expect(second.frames.patchedFrames == 2)
        #expect(second.newChunks == 4, "three pages and one whole frame: \(second.newChunks)")
        #expect(second.newBytes < 3 * 4200 + 66_000, "\(second.newBytes)")
        // Without a base the same change costs three whole frames.
        let other = try ChunkStore(root: dir.appendingPathComponent("other"))
        _ = try FrameCutter(store: other, frameSize: 65536).cut(base)
        let whole = try FrameCutter(store: other, frameSize: 65536).cut(changed)
        #expect(whole.patchedFrames == 0 && whole.newChunks == 3)

        let file = ChunkedFile(store: store, frames: second.frames)
        let copy = dir.appendingPathComponent("copy")
        try file.materialize(to: copy)
        #expect(try contents(copy) == contents(changed))
        let frame = (1 << 20) / 65536
        #expect(try file.readFrame(frame) == Array(contents(changed)[frame * 65536 ..< (frame + 1) * 65536]))
        try file.verify()

        // Its pages are deltas against the pages they replace, and it round-trips; its digest
        // differs from the base's.
        let json = try JSONEncoder().encode(second.frames)
        #expect(String(decoding: json, as: UTF8.self).contains("\"version\":\(FrameList.currentVersion)"))
        #expect(second.frames.patches(at: try #require(second.frames.nonZeroFrames.firstIndex(of: frame))).contains { $0.isDelta })
        #expect(try JSONDecoder().decode(FrameList.self, from: json) == second.frames)
        #expect(second.frames.digest != first.frames.digest)
        #expect(!String(decoding: try JSONEncoder().encode(first.frames), as: UTF8.self).contains("patches"))

        // The seekable export holds the patched content.
        let exported = dir.appendingPathComponent("export.zst")
        try file.exportSeekable(to: exported)
        let reader = try SeekableReader(url: exported)
        #expect(try reader.frame(frame) == Array(contents(changed)[frame * 65536 ..< (frame + 1) * 65536]))

        // Cutting the changed file again over the same base stores nothing new.
        let again = try cutter.cut(changed, base: first.frames)
        #expect(again.newChunks == 0 && again.frames == second.frames)
    }

    @Test func aPageChangedInAFewWordsCostsAFewBytes() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SeededGenerator(seed: 12)
        var bytes = sampleBytes(4 << 20, &rng)
        let base = dir.appendingPathComponent("base")
        try makeSparseFile(base, size: bytes.count, regions: [(0, bytes)])
        // Like a kernel's bookkeeping: a counter and a pointer in each of 20 pages of 10 frames.
        for frame in 0 ..< 10 {
            for page in [1, 7] { for word in [16, 800] { bytes[frame * 65536 * 3 + page * 4096 + word] &+= 1 } }
        }
        let changed = dir.appendingPathComponent("changed")
        try makeSparseFile(changed, size: bytes.count, regions: [(0, bytes)])
        let store = try ChunkStore(root: dir)
        let cutter = try FrameCutter(store: store, frameSize: 65536)
        let second = try cutter.cut(changed, base: try cutter.cut(base).frames)
        #expect(second.patchedFrames == 10 && second.newChunks == 20)
        #expect(second.newBytes < 20 * 80, "20 pages changed in two bytes each cost \(second.newBytes) bytes")
        let copy = dir.appendingPathComponent("copy")
        try ChunkedFile(store: store, frames: second.frames).materialize(to: copy)
        #expect(try contents(copy) == bytes)
    }

    /// Page patches go into one pack of the store, not a store file each; a page still patched
    /// in the next cut stays in that pack, so a pack holds only what changed since the cut before.
    @Test func pagePatchesArePackedAndPagesThatLastStayInTheirPack() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, changed) = try Self.makeBaseAndChange(dir)
        let store = try ChunkStore(root: dir)
        let cutter = try FrameCutter(store: store, frameSize: 65536)
        let first = try cutter.cut(base)
        let chunksBefore = try store.allHashes()
        let second = try cutter.cut(changed, base: first.frames, packing: true)
        #expect(second.frames.packedChunks.count == 3, "the three changed pages: \(second.frames.packedChunks.count)")
        #expect(try store.allHashes().subtracting(chunksBefore).count == 1, "only the whole new frame is a store file")
        let packs = try store.allPacks()
        #expect(packs.count == 1 && second.frames.packs == packs.map(\.name))
        #expect(second.frames.packLengths == [packs[0].name: packs[0].size])
        #expect(try allocatedBytes(store.packURL(packs[0].name)) <= 16384)
        let file = ChunkedFile(store: store, frames: second.frames)
        let copy = dir.appendingPathComponent("copy")
        try file.materialize(to: copy)
        #expect(try contents(copy) == contents(changed))
        let json = try JSONEncoder().encode(second.frames)
        #expect(try JSONDecoder().decode(FrameList.self, from: json) == second.frames)
        // Damaged pack names and places are refused, never followed.
        let object = try version4Object(second.frames)
        #expect(try JSONDecoder().decode(FrameList.self, from: JSONSerialization.data(withJSONObject: object)) == second.frames,
                "a version 4 list still reads")
        let packed = try #require(object["packed"] as? [Int])
        for (name, change) in [("a path for a pack name", ["packs": ["../../etc"]]), ("no packs", ["packs": [String]()]),
                               ("a pack out of range", ["packed": [packed[0], 7] + packed.dropFirst(2)]),
                               ("the own pack beside shared ones", ["packs": [packs[0].name, ""]])] as [(String, [String: Any])] {
            let damaged = try JSONSerialization.data(withJSONObject: object.merging(change) { $1 })
            let error = #expect(throws: StasisError.self, "\(name)") { try JSONDecoder().decode(FrameList.self, from: damaged) }
            #expect(error?.code == .corrupted, "\(name): \(String(describing: error))")
        }

        // The same change cut again over the second: its pages are listed where they are.
        let third = try cutter.cut(changed, base: second.frames, packing: true)
        #expect(third.frames.packs == second.frames.packs && third.frames.patchedFrames == second.frames.patchedFrames)
        #expect(third.newBytes == 0 && third.newChunks == 0, "nothing new: \(third.newChunks) chunks, \(third.newBytes) bytes")
        #expect(try store.allPacks().count == 1)
        try ChunkedFile(store: store, frames: third.frames).materialize(to: copy)
        #expect(try contents(copy) == contents(changed))

        // A missing pack fails the read, naming the frame.
        try FileManager.default.removeItem(at: store.packURL(packs[0].name))
        let missing = #expect(throws: StasisError.self) { try ChunkedFile(store: store, frames: third.frames).verify() }
        #expect(missing?.code == .notFound && missing?.message.contains("frame") == true, "\(String(describing: missing))")
    }

    @Test func aDamagedPageFailsNamingTheFrameAndItsChunk() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, changed) = try Self.makeBaseAndChange(dir)
        let store = try ChunkStore(root: dir)
        let cutter = try FrameCutter(store: store, frameSize: 65536)
        let frames = try cutter.cut(changed, base: try cutter.cut(base).frames).frames
        let frame = (1 << 20) / 65536
        let position = try #require(frames.nonZeroFrames.firstIndex(of: frame))
        let page = try #require(frames.patches(at: position).first?.chunk)
        try flipByte(of: store.path(of: page.hash), at: page.storedSize / 2)
        let error = #expect(throws: StasisError.self) { try ChunkedFile(store: store, frames: frames).materialize(to: dir.appendingPathComponent("copy")) }
        #expect(error?.code == .corrupted)
        #expect(error?.description.contains("frame \(frame)") == true && error?.description.contains(page.hash) == true, "\(String(describing: error))")
    }

    @Test func patchTriplesAreChecked() throws {
        let hash = String(repeating: "ab", count: 32)
        let page = String(repeating: "cd", count: 32)
        let good = try FrameList(frameSize: 65536, totalSize: 2 * 65536, frames: [(1, ChunkRef(hash: hash, rawSize: 65536, storedSize: 20))],
                                 patches: [1: [.init(page: 3, chunk: ChunkRef(hash: page, rawSize: 4096, storedSize: 30)), .init(page: 5, chunk: nil)]])
        let valid = try version4Object(good)
        #expect(valid["patches"] as? [Int] == [1, 3, 1, 1, 5, -1])
        func decode(_ patches: [Int], version: Int = 2) -> FrameList? {
            var object = valid
            object["patches"] = patches
            object["version"] = version
            guard let data = try? JSONSerialization.data(withJSONObject: object) else { return nil }
            return try? JSONDecoder().decode(FrameList.self, from: data)
        }
        #expect(decode([1, 3, 1, 1, 5, -1]) == good)
        for bad in [[1, 3, 1, 1, 5], [1, 5, -1, 1, 3, 1], [1, 3, 1, 1, 3, 1], [0, 3, 1, 1, 5, -1], [1, 16, 1, 1, 5, -1],
                    [1, 3, 2, 1, 5, -1], [1, 3, -2, 1, 5, -1], [1, 3, 1, 1, Int.max, -1], [Int.min, 3, 1, 1, 5, -1], [1, 3, 1]] {
            #expect(decode(bad) == nil, "\(bad)")
        }
        #expect(decode([1, 3, 1, 1, 5, -1], version: 1) == nil, "version 1 has no patches")
    }
}
