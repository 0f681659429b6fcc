import Foundation
@testable import ChunkStore
import StasisCore
import Testing

@Suite struct FrameReferenceTests {
    /// A 1 MiB reference file, and a 4 MiB file holding its bytes at 1 MiB with a few bytes of
    /// each 64 KiB frame changed (like a kernel patched at boot), plus other data elsewhere.
    static func makeFiles(_ dir: URL) throws -> (reference: FrameReference, file: URL) {
        var rng = SeededGenerator(seed: 91)
        let kernel = sampleBytes(1 << 20, &rng)
        let referenceURL = dir.appendingPathComponent("vmlinux")
        try Data(kernel).write(to: referenceURL)
        var loaded = kernel
        for frame in 0 ..< 16 { loaded[frame * 65536 + 1000 + frame] ^= 0x5a }
        let file = dir.appendingPathComponent("memory")
        try makeSparseFile(file, size: 4 << 20, regions: [(1 << 20, loaded), (3 << 20, sampleBytes(65536, &rng))])
        let reference = FrameReference(url: referenceURL, digest: try FrameReference.digest(of: referenceURL),
                                       segments: [.init(offset: 1 << 20, fileOffset: 0, length: 1 << 20)])
        return (reference, file)
    }

    @Test func framesInsideTheReferenceCostWhatDiffersAndReadBackExactly() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (reference, file) = try Self.makeFiles(dir)
        let store = try ChunkStore(root: dir)
        let cut = try FrameCutter(store: store, frameSize: 65536).cut(file, reference: reference)
        #expect(cut.frames.deltaFrames == 16)
        #expect(cut.frames.reference == reference.identity)
        #expect(cut.frames.deltaBytes < 16 * 200, "\(cut.frames.deltaBytes) bytes for 16 frames of a few changed bytes")
        let plain = try FrameCutter(store: ChunkStore(root: dir.appendingPathComponent("plain")), frameSize: 65536).cut(file)
        #expect(plain.frames.deltaFrames == 0 && plain.newBytes > 10 * cut.newBytes / 2, "\(plain.newBytes) vs \(cut.newBytes)")

        let chunked = ChunkedFile(store: store, frames: cut.frames, reference: reference)
        let copy = dir.appendingPathComponent("copy")
        try chunked.materialize(to: copy)
        #expect(try contents(copy) == contents(file))
        try chunked.verify()

        // It round-trips, as version 4 too; cutting again stores nothing new.
        let json = try JSONEncoder().encode(cut.frames)
        #expect(String(decoding: json, as: UTF8.self).contains("\"version\":\(FrameList.currentVersion)"))
        #expect(try JSONDecoder().decode(FrameList.self, from: JSONSerialization.data(withJSONObject: version4Object(cut.frames))) == cut.frames)
        // A delta frame's chunk replaced stays a delta; every other frame is untouched.
        let position = try #require(cut.frames.nonZeroFrames.indices.first { cut.frames.isDelta(at: $0) })
        let stand = ChunkRef(hash: String(repeating: "0f", count: 32), rawSize: cut.frames.ref(at: position).rawSize, storedSize: 99)
        let replaced = try cut.frames.replacingChunk(ofFrame: cut.frames.nonZeroFrames[position], with: stand)
        #expect(replaced.isDelta(at: position) && replaced.deltaFrames == cut.frames.deltaFrames && replaced.reference == cut.frames.reference)
        #expect(replaced.nonZeroFrames.indices.filter { replaced.ref(at: $0) != cut.frames.ref(at: $0) } == [position])
        #expect(throws: StasisError.self, "a chunk already listed") {
            try cut.frames.replacingChunk(ofFrame: cut.frames.nonZeroFrames[position], with: cut.frames.ref(at: 0))
        }
        if let zero = (0 ..< cut.frames.frameCount).first(where: { cut.frames.chunk(ofFrame: $0) == nil }) {
            #expect(throws: StasisError.self, "a zero frame") { try cut.frames.replacingChunk(ofFrame: zero, with: stand) }
        }
        #expect(try JSONDecoder().decode(FrameList.self, from: json) == cut.frames)
        let again = try FrameCutter(store: store, frameSize: 65536).cut(file, reference: reference)
        #expect(again.newChunks == 0 && again.frames == cut.frames)

        // The seekable export needs no reference: `zstd -d` gives the file back.
        let exported = dir.appendingPathComponent("export.zst")
        try chunked.exportSeekable(to: exported)
        let frame = (1 << 20) / 65536 + 3
        #expect(try SeekableReader(url: exported).frame(frame) == Array(contents(file)[frame * 65536 ..< (frame + 1) * 65536]))
    }

    @Test func aMissingOrChangedReferenceFailsNamingTheFrame() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (reference, file) = try Self.makeFiles(dir)
        let store = try ChunkStore(root: dir)
        let frames = try FrameCutter(store: store, frameSize: 65536).cut(file, reference: reference).frames
        let first = (1 << 20) / 65536

        let missing = #expect(throws: StasisError.self) { try ChunkedFile(store: store, frames: frames).verify() }
        #expect(missing?.code == .notFound && missing?.description.contains("frame \(first)") == true, "\(String(describing: missing))")

        let other = FrameReference(url: reference.url, digest: "sha256:" + String(repeating: "0", count: 64), segments: reference.identity.segments)
        let wrong = #expect(throws: StasisError.self) { try ChunkedFile(store: store, frames: frames, reference: other).verify() }
        #expect(wrong?.code == .notFound, "\(String(describing: wrong))")

        // Same identity claimed, other bytes: the chunk's hash, which covers the reference, fails.
        var bytes = try contents(reference.url)
        bytes[70_000] ^= 1
        try Data(bytes).write(to: reference.url)
        let changed = #expect(throws: StasisError.self) { try ChunkedFile(store: store, frames: frames, reference: reference).verify() }
        #expect(changed?.code == .corrupted && changed?.description.contains("frame \(first + 1)") == true, "\(String(describing: changed))")
    }

    @Test func aChangeOverADeltaBaseCostsItsPages() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (reference, file) = try Self.makeFiles(dir)
        let store = try ChunkStore(root: dir)
        let cutter = try FrameCutter(store: store, frameSize: 65536)
        let first = try cutter.cut(file, reference: reference)
        var bytes = try contents(file)
        var rng = SeededGenerator(seed: 5)
        let page = (1 << 20) + 2 * 65536 + 4096
        bytes.replaceSubrange(page ..< page + 4096, with: sampleBytes(4096, &rng))
        let changed = dir.appendingPathComponent("changed")
        try makeSparseFile(changed, size: bytes.count, regions: [(0, bytes)])
        let second = try cutter.cut(changed, base: first.frames, reference: reference)
        #expect(second.newChunks <= 1 && second.newBytes < 5000, "\(second.newChunks) chunks, \(second.newBytes) bytes")
        let copy = dir.appendingPathComponent("copy")
        try ChunkedFile(store: store, frames: second.frames, reference: reference).materialize(to: copy)
        #expect(try contents(copy) == bytes)
    }

    @Test func deltasOutsideTheSegmentsOrWithoutAReferenceAreRefused() throws {
        let hash = String(repeating: "ab", count: 32)
        let identity = FrameReference.Identity(digest: "sha256:" + String(repeating: "cd", count: 32),
                                               segments: [.init(offset: 65536, fileOffset: 0, length: 65536)])
        let good = try FrameList(frameSize: 65536, totalSize: 3 * 65536, frames: [(1, ChunkRef(hash: hash, rawSize: 65536, storedSize: 20))],
                                 reference: identity, deltaChunks: [hash])
        #expect(throws: StasisError.self) {
            try FrameList(frameSize: 65536, totalSize: 3 * 65536, frames: [(2, ChunkRef(hash: hash, rawSize: 65536, storedSize: 20))],
                          reference: identity, deltaChunks: [hash])
        }
        #expect(throws: StasisError.self) {
            try FrameList(frameSize: 65536, totalSize: 3 * 65536, frames: [(1, ChunkRef(hash: hash, rawSize: 65536, storedSize: 20))],
                          deltaChunks: [hash])
        }
        let valid = try JSONSerialization.jsonObject(with: JSONEncoder().encode(good)) as? [String: Any] ?? [:]
        func decode(_ change: (inout [String: Any]) -> Void) -> FrameList? {
            var object = valid
            change(&object)
            guard let data = try? JSONSerialization.data(withJSONObject: object) else { return nil }
            return try? JSONDecoder().decode(FrameList.self, from: data)
        }
        #expect(decode { _ in } == good)
        #expect(decode { $0["deltas"] = [1] } == nil)
        #expect(decode { $0["deltas"] = [0, 0] } == nil)
        #expect(decode { $0["version"] = 2 } == nil, "version 2 has no reference: the digest no longer matches")
        #expect(decode { $0["reference"] = ["digest": "md5:x", "segments": [65536, 0, 65536]] } == nil)
        #expect(decode { $0["reference"] = ["digest": identity.digest, "segments": [65536, 0, 65536 * 3]] } == nil)
        #expect(decode { $0["reference"] = ["digest": identity.digest, "segments": [0, 0, 65536, 32768, 0, 65536]] } == nil)
        #expect(decode { $0["reference"] = ["digest": identity.digest, "segments": [65536, 0]] } == nil)
    }
}
