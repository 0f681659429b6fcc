@testable import ChunkStore
import Foundation
import StasisCore
import Testing

/// Frame lists kept as deltas over a base list: exact round trips, and refusal of a wrong base.
@Suite struct FrameListDeltaTests {
    /// Cuts the sample file, then its changed version patched over it (and packed), in one store.
    static func lists(_ dir: URL) throws -> (base: FrameList, changed: FrameList) {
        let (base, changed) = try PagePatchTests.makeBaseAndChange(dir)
        let cutter = try FrameCutter(store: ChunkStore(root: dir), frameSize: 65536)
        let first = try cutter.cut(base).frames
        return (first, try cutter.cut(changed, base: first, packing: true).frames)
    }

    @Test func aDeltaListsOnlyWhatDiffersAndPutsTheListBackExactly() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, changed) = try Self.lists(dir)
        let delta = try #require(try FrameListDelta(changed, over: base))
        // Two frames patched over their old chunk (one with a page zeroed): only those pages; one
        // frame rewritten: whole.
        #expect(delta.changed.nonZeroFrames.count == 1 && delta.repatched.nonZeroFrames.count == 2 && delta.zeroed.isEmpty,
                "\(delta.changed.nonZeroFrames) \(delta.repatched.nonZeroFrames)")
        #expect(try delta.applied(to: base) == changed)
        let json = try JSONEncoder().encode(delta)
        #expect(try JSONDecoder().decode(FrameListDelta.self, from: json) == delta)
        // Over itself: nothing changed, the same list back.
        let none = try #require(try FrameListDelta(changed, over: changed))
        #expect(none.changed.nonZeroFrames.isEmpty && none.zeroed.isEmpty)
        #expect(try none.applied(to: changed) == changed)
        // Back the other way: frames the changed list has and the base does not are zeroed.
        let back = try #require(try FrameListDelta(base, over: changed))
        #expect(try back.applied(to: changed) == base)
    }

    /// A page patched again lists that page alone, not its frame's other patches.
    @Test func aPagePatchedAgainCostsThatPage() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (_, changed) = try Self.lists(dir)
        var bytes = try contents(dir.appendingPathComponent("changed"))
        for offset in 0 ..< 100 { bytes[(1 << 20) + 4096 + offset] ^= 0x5a }  // page 1 of the patched frame
        let again = dir.appendingPathComponent("again")
        try makeSparseFile(again, size: bytes.count, regions: [(0, bytes)])
        let third = try FrameCutter(store: ChunkStore(root: dir), frameSize: 65536).cut(again, base: changed, packing: true).frames
        let delta = try #require(try FrameListDelta(third, over: changed))
        #expect(delta.changed.nonZeroFrames.isEmpty && delta.repatched.nonZeroFrames == [16] && delta.unpatched.isEmpty)
        #expect(delta.repatched.patchedFrames == 1 && delta.repatched.chunks.count == 2, "the frame's chunk and one page: \(delta.repatched.chunks.count), patches \(delta.repatched.patches(at: 0).map(\.page))")
        #expect(try delta.applied(to: changed) == third)
    }

    @Test func aDeltaOverAnotherBaseIsRefused() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, changed) = try Self.lists(dir)
        let delta = try #require(try FrameListDelta(changed, over: base))
        let error = #expect(throws: StasisError.self) { try delta.applied(to: changed) }
        #expect(error?.code == .corrupted)
        let other = try FrameList(frameSize: 65536, totalSize: base.totalSize * 2, frames: [])
        #expect(try FrameListDelta(changed, over: other) == nil, "other geometry: no delta, a new base")
    }

    /// 3,000 mutations of a delta's JSON: each is refused, or decodes and then either puts back
    /// the list (frames, chunks, patches and packs: what the digest covers; a damaged stored size
    /// fails when that chunk is read) or is refused by the digest; never a crash or a wrong list.
    @Test func damagedDeltasNeverGiveAWrongList() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, changed) = try Self.lists(dir)
        let valid = [UInt8](try JSONEncoder().encode(try #require(try FrameListDelta(changed, over: base))))
        var rng = SeededGenerator(seed: 81)
        var wrong = 0
        for _ in 0 ..< 3000 {
            guard let decoded = try? JSONDecoder().decode(FrameListDelta.self, from: Data(FuzzTests.mutate(valid, &rng))),
                  let list = try? decoded.applied(to: base) else { continue }
            if list.digest != changed.digest || list.chunks.sorted() != changed.chunks.sorted() || list.packs != changed.packs { wrong += 1 }
        }
        #expect(wrong == 0)
    }
}
