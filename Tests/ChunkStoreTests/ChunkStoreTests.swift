import Foundation
@testable import ChunkStore
import StasisCore
import Testing

@Suite struct ChunkStoreTests {
    @Test func putAndGetRoundTrip() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        var rng = SeededGenerator(seed: 1)
        let frame = sampleBytes(65536, &rng)
        let ref = try #require(try store.put(frame))
        #expect(ref.hash.count == 64 && ref.rawSize == 65536 && ref.storedSize > 0)
        #expect(ref.storedSize < 65536, "sample data should compress")
        #expect(FileManager.default.fileExists(atPath: dir.path + "/chunks/\(ref.hash.prefix(2))/\(ref.hash)"))
        #expect(try store.get(ref) == frame)
        #expect(store.contains(ref.hash))
        #expect(try store.storedBytes() == ref.storedSize)
        #expect(try store.allHashes() == [ref.hash])
    }

    @Test func aChunkFileIsAPlainZstdFrame() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        var rng = SeededGenerator(seed: 2)
        let frame = sampleBytes(4096, &rng)
        let ref = try #require(try store.put(frame))
        let out = dir.appendingPathComponent("out")
        let result = try zstdTool(["-q", "-d", store.path(of: ref.hash), "-o", out.path])
        #expect(result.status == 0, "\(result.errors)")
        #expect(try contents(out) == frame)
    }

    @Test func zeroFramesAreNeverStored() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        #expect(try store.put([UInt8](repeating: 0, count: 4096)) == nil)
        #expect(try store.put([UInt8](repeating: 0, count: 1)) == nil)
        #expect(try store.put([UInt8]()) == nil)
        var almost = [UInt8](repeating: 0, count: 4096)
        almost[4095] = 1
        #expect(try store.put(almost) != nil)
        #expect(try store.allHashes().count == 1)
    }

    @Test func identicalFramesAreStoredOnce() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        let zstd = try Zstd()
        var rng = SeededGenerator(seed: 3)
        let frame = sampleBytes(16384, &rng)
        let first = try #require(try frame.withUnsafeBytes { try store.store($0, codec: zstd) })
        let path = store.path(of: first.ref.hash)
        let inode = try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int
        let second = try #require(try frame.withUnsafeBytes { try store.store($0, codec: zstd) })
        #expect(first.isNew && !second.isNew)
        #expect(first.ref == second.ref)
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber] as? Int == inode, "rewritten")
        #expect(try store.allHashes().count == 1)
    }

    @Test(arguments: [0, 4, 12, -9, -1])
    func aFlippedByteIsCorruption(offset: Int) throws {
        let (dir, store, ref) = try Self.storeWithSample(seed: 4)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.flip(ref, in: store, at: offset)
        let error = #expect(throws: StasisError.self) { try store.get(ref) }
        #expect(error?.code == .corrupted)
        #expect(error?.description.contains(ref.hash) == true, "\(String(describing: error))")
    }

    @Test func validFrameWithOtherContentIsCorruption() throws {
        // A chunk file replaced by a valid frame of other bytes of the same size: only the hash
        // check can tell.
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        let ref = try #require(try store.put([UInt8](repeating: 1, count: 4096)))
        let other = try Zstd().compress([UInt8](repeating: 2, count: 4096))
        try Data(other).write(to: URL(fileURLWithPath: store.path(of: ref.hash)))
        let error = #expect(throws: StasisError.self) { try store.get(ref) }
        #expect(error?.code == .corrupted)
        #expect(error?.description.contains("does not match its hash") == true)
    }

    /// A store in a fresh folder (the caller removes it) holding one 8 KiB sample chunk.
    static func storeWithSample(seed: UInt64) throws -> (dir: URL, store: ChunkStore, ref: ChunkRef) {
        let dir = try makeTemporaryFolder()
        let store = try ChunkStore(root: dir)
        var rng = SeededGenerator(seed: seed)
        return (dir, store, try #require(try store.put(sampleBytes(8192, &rng))))
    }

    /// Flips byte `offset` of chunk `ref`'s file (counted from its end when negative).
    static func flip(_ ref: ChunkRef, in store: ChunkStore, at offset: Int) throws {
        try flipByte(of: store.path(of: ref.hash), at: offset >= 0 ? offset : ref.storedSize + offset)
    }

    /// Reads chunk `ref` as a restore does: checked by the frame's own checksum.
    static func loadChecked(_ store: ChunkStore, _ ref: ChunkRef) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ref.rawSize, alignment: 16)
        defer { buffer.deallocate() }
        try store.load(ref, into: buffer, codec: try Zstd(), check: .frameChecksum)
    }

    @Test(arguments: [12, -4, -1])
    func theFrameChecksumCatchesAFlippedByte(offset: Int) throws {
        // -4 and -1 are bytes of the checksum itself: nothing but the checksum can notice them.
        let (dir, store, ref) = try Self.storeWithSample(seed: 5)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.loadChecked(store, ref)
        try Self.flip(ref, in: store, at: offset)
        let error = #expect(throws: StasisError.self) { try Self.loadChecked(store, ref) }
        #expect(error?.code == .corrupted)
        #expect(error?.description.contains(ref.hash) == true, "\(String(describing: error))")
    }

    @Test func aFrameWithoutAChecksumIsCheckedByName() throws {
        // A valid frame of other bytes, its checksum flag cleared and its checksum dropped: the
        // frame-checksum read must fall back to the name to notice.
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        let ref = try #require(try store.put([UInt8](repeating: 1, count: 4096)))
        var other = try Zstd().compress([UInt8](repeating: 2, count: 4096))
        #expect(other.withUnsafeBytes(Zstd.hasContentChecksum))
        other[4] &= ~0x04
        other.removeLast(4)
        #expect(!other.withUnsafeBytes(Zstd.hasContentChecksum))
        #expect(try Zstd().decompress(other, expectedSize: 4096) == [UInt8](repeating: 2, count: 4096))
        try Data(other).write(to: URL(fileURLWithPath: store.path(of: ref.hash)))
        let error = #expect(throws: StasisError.self) { try Self.loadChecked(store, ref) }
        #expect(error?.description.contains("does not match its hash") == true, "\(String(describing: error))")
    }

    @Test func missingChunksAndBadReferences() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        let missing = ChunkRef(hash: String(repeating: "ab", count: 32), rawSize: 4096, storedSize: 10)
        #expect((#expect(throws: StasisError.self) { try store.get(missing) })?.code == .notFound)
        for hash in ["../../../etc/passwd", String(repeating: "AB", count: 32), "abc", String(repeating: "a", count: 65)] {
            let ref = ChunkRef(hash: hash, rawSize: 4096, storedSize: 10)
            #expect((#expect(throws: StasisError.self) { try store.get(ref) })?.code == .invalidArgument)
            #expect(!store.contains(hash))
        }
        let huge = ChunkRef(hash: missing.hash, rawSize: 1 << 40, storedSize: 10)
        #expect((#expect(throws: StasisError.self) { try store.get(huge) })?.code == .invalidArgument)
    }

    @Test func removeAndInventory() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        var refs: [ChunkRef] = []
        for i in 1 ... 20 {
            refs.append(try #require(try store.put([UInt8](repeating: UInt8(i), count: 4096 + i))))
        }
        // A leftover temporary file from a crash is not a chunk.
        let prefix = refs[0].hash.prefix(2)
        try Data([1, 2, 3]).write(to: dir.appendingPathComponent("chunks/\(prefix)/.\(refs[0].hash).tmp-1"))
        #expect(try store.allHashes() == Set(refs.map(\.hash)))
        #expect(try store.storedBytes() == refs.map(\.storedSize).reduce(0, +))
        #expect(try store.remove(refs[3].hash))
        #expect(try !store.remove(refs[3].hash))
        #expect(!store.contains(refs[3].hash))
        #expect(try store.allHashes().count == 19)
        #expect((#expect(throws: StasisError.self) { try store.get(refs[3]) })?.code == .notFound)
        #expect(throws: StasisError.self) { try store.remove("..") }
        try store.sync()
    }

    @Test func concurrentPutsOfTheSameFrameLeaveOneGoodChunk() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ChunkStore(root: dir)
        var rng = SeededGenerator(seed: 5)
        let frame = sampleBytes(65536, &rng)
        try ParallelWork.run(workers: 8) { _, _ in
            for _ in 0 ..< 10 { _ = try store.put(frame) }
        }
        let hashes = try store.allHashes()
        #expect(hashes.count == 1)
        let folder = dir.appendingPathComponent("chunks/\(hashes.first?.prefix(2) ?? "")")
        #expect(try listing(folder).count == 1, "temporary files left behind")
        let ref = try #require(try store.put(frame))
        #expect(try store.get(ref) == frame)
    }

    /// Shared pack files stay open while used and, once unused, only up to the limit: the least
    /// recently used close first, one in use never.
    @Test func openFilesKeepAtMostTheLimitOpenWhileUnused() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let paths = try (0 ..< 12).map { index in
            let url = dir.appendingPathComponent("file-\(index)")
            try Data([UInt8(index)]).write(to: url)
            return url.path
        }
        func byte(_ fd: Int32) -> UInt8? {
            var value: UInt8 = 0
            return pread(fd, &value, 1, 0) == 1 ? value : nil
        }
        let files = OpenFiles(limit: 4)
        let held = try files.acquire(paths[0])
        for (index, path) in paths.enumerated().dropFirst() {
            #expect(try files.withDescriptor(path) { byte($0) } == UInt8(index))
            #expect(files.count <= 5)
        }
        #expect(byte(held) == 0, "a file in use stays open past the limit")
        // The most recently used stay open: the same descriptor again.
        let recent = try files.withDescriptor(paths[11]) { $0 }
        #expect(try files.withDescriptor(paths[11]) { $0 } == recent)
        files.release([paths[0]])
        #expect(files.count == 4)
        // Many in use at once (a restore's workers) are all open, then trimmed when released.
        let all = try paths.map { try files.acquire($0) }
        #expect(files.count == paths.count && zip(all, paths.indices).allSatisfy { byte($0) == UInt8($1) })
        files.release(paths)
        #expect(files.count == 4)
    }
}
