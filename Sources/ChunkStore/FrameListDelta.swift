import Foundation
import StasisCore

/// A frame list kept as what differs from a base list: what a snapshot of a long session stores
/// instead of its whole list, since consecutive snapshots differ in ~100 of ~1,400 frames, most
/// of them in a page or two of patches. Frames whose chunk changed are listed whole; frames that
/// kept their chunk list only the page patches that changed. The base is always a whole list,
/// never another delta, so reading one is two lists, however long the session.
public struct FrameListDelta: Codable, Equatable, Sendable {
    /// The format written and read.
    public static let currentVersion = 1

    /// The digest of the base list.
    public let base: String
    /// The frames whose chunk differs from the base's (or that are zero there), whole; every
    /// other frame zero.
    public let changed: FrameList
    /// The frames that kept the base's chunk but not all its page patches: the chunk and only
    /// the patches that are new or differ; every other frame zero.
    public let repatched: FrameList
    /// Page patches of the base to drop, as flat pairs (frame, page); each frame is in `repatched`.
    public let unpatched: [Int]
    /// Frames non-zero in the base and zero here, ascending.
    public let zeroed: [Int]
    /// The digest of the whole list: checked once it is put back together.
    public let digest: String

    /// What `list` differs in from `base`. Nil when they cannot be compared (other geometry or
    /// kernel reference): the list is then stored as a new base.
    public init?(_ list: FrameList, over base: FrameList) throws {
        guard list.frameSize == base.frameSize, list.totalSize == base.totalSize,
              list.reference == nil || base.reference == nil || list.reference == base.reference else { return nil }
        var changed = EntryList()
        var repatched = EntryList()
        var unpatched: [Int] = []
        var zeroed: [Int] = []
        var theirs = 0
        for (position, index) in list.nonZeroFrames.enumerated() {
            while theirs < base.nonZeroFrames.count, base.nonZeroFrames[theirs] < index {
                zeroed.append(base.nonZeroFrames[theirs])
                theirs += 1
            }
            let entry = FrameEntry(list, position)
            guard theirs < base.nonZeroFrames.count, base.nonZeroFrames[theirs] == index else {
                changed.add(index, entry)
                continue
            }
            let old = FrameEntry(base, theirs)
            theirs += 1
            if old == entry { continue }
            guard old.ref == entry.ref, old.isDelta == entry.isDelta else {
                changed.add(index, entry)
                continue
            }
            // Same chunk: only the pages whose patch is new or differs, and the pages it dropped.
            let kept = Dictionary(uniqueKeysWithValues: old.patches.map { ($0.page, $0) })
            let pages = Set(entry.patches.map(\.page))
            repatched.add(index, FrameEntry(ref: entry.ref, isDelta: entry.isDelta, patches: entry.patches.filter { kept[$0.page] != $0 }))
            for patch in old.patches where !pages.contains(patch.page) { unpatched += [index, patch.page] }
        }
        zeroed += base.nonZeroFrames[theirs...]
        self.base = base.digest
        self.changed = try changed.frameList(like: list)
        self.repatched = try repatched.frameList(like: list)
        self.unpatched = unpatched
        self.zeroed = zeroed
        self.digest = list.digest
    }

    /// The whole list: `base` with the changed frames put in and the zeroed ones taken out.
    /// A base other than the one this delta was made over, or a result whose digest is not the
    /// recorded one, is `.corrupted`.
    public func applied(to base: FrameList) throws -> FrameList {
        guard base.digest == self.base else {
            throw StasisError(.corrupted, "frame list delta is over base \(self.base.prefix(80)), not \(base.digest)")
        }
        for part in [changed, repatched] {
            guard part.frameSize == base.frameSize, part.totalSize == base.totalSize else {
                throw StasisError(.corrupted, "frame list delta has \(part.frameSize)-byte frames over \(part.totalSize) bytes; its base has \(base.frameSize) over \(base.totalSize)")
            }
            if let mine = part.reference, let theirs = base.reference, mine != theirs {
                throw StasisError(.corrupted, "frame list delta is against another reference than its base")
            }
        }
        var dropped: [Int: Set<Int>] = [:]
        for start in stride(from: 0, to: unpatched.count, by: 2) { dropped[unpatched[start], default: []].insert(unpatched[start + 1]) }
        let removed = Set(zeroed)
        let replaced = Set(changed.nonZeroFrames)
        let repatchedAt = Dictionary(uniqueKeysWithValues: repatched.nonZeroFrames.enumerated().map { ($1, $0) })
        var whole = EntryList()
        for (position, index) in base.nonZeroFrames.enumerated() where !removed.contains(index) && !replaced.contains(index) {
            var entry = FrameEntry(base, position)
            if let at = repatchedAt[index] {
                let update = FrameEntry(repatched, at)
                guard update.ref == entry.ref, update.isDelta == entry.isDelta else {
                    throw StasisError(.corrupted, "frame list delta repatches frame \(index) over another chunk than its base's")
                }
                let gone = dropped[index] ?? []
                let pages = Set(update.patches.map(\.page))
                guard gone.isSubset(of: entry.patches.map(\.page)), gone.isDisjoint(with: pages) else {
                    throw StasisError(.corrupted, "frame list delta drops a page patch of frame \(index) its base does not have, or one it also sets")
                }
                entry.patches = (entry.patches.filter { !gone.contains($0.page) && !pages.contains($0.page) } + update.patches)
                    .sorted { $0.page < $1.page }
            }
            whole.add(index, entry)
        }
        guard Set(repatchedAt.keys).isSubset(of: Set(base.nonZeroFrames)), Set(dropped.keys).isSubset(of: Set(repatchedAt.keys)) else {
            throw StasisError(.corrupted, "frame list delta repatches a frame its base does not have")
        }
        for position in changed.nonZeroFrames.indices { whole.add(changed.nonZeroFrames[position], FrameEntry(changed, position)) }
        let list = try whole.frameList(frameSize: base.frameSize, totalSize: base.totalSize, reference: base.reference ?? changed.reference)
        guard list.digest == digest else {
            throw StasisError(.corrupted, "frame list put back together has digest \(list.digest); its delta recorded \(digest.prefix(80))")
        }
        return list
    }

    private enum CodingKeys: String, CodingKey {
        case version, base, changed, repatched, unpatched, zeroed, digest
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Self.currentVersion, forKey: .version)
        try container.encode(base, forKey: .base)
        try container.encode(changed, forKey: .changed)
        try container.encode(repatched, forKey: .repatched)
        try container.encode(unpatched, forKey: .unpatched)
        try container.encode(zeroed, forKey: .zeroed)
        try container.encode(digest, forKey: .digest)
    }

    /// Decodes and checks what can be checked without the base: the two lists (which check
    /// themselves) with no frame in both, dropped pages as whole pairs, zeroed frames ascending,
    /// inside the file and in neither list.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let version = try container.decode(Int.self, forKey: .version)
        guard version == Self.currentVersion else {
            throw StasisError(.unsupported, "frame list delta version \(version); this stasis reads version \(Self.currentVersion)")
        }
        let changed = try container.decode(FrameList.self, forKey: .changed)
        let repatched = try container.decode(FrameList.self, forKey: .repatched)
        let unpatched = try container.decode([Int].self, forKey: .unpatched)
        let zeroed = try container.decode([Int].self, forKey: .zeroed)
        guard zeroed.allSatisfy({ $0 >= 0 && $0 < changed.frameCount }), zip(zeroed, zeroed.dropFirst()).allSatisfy({ $0 < $1 }),
              Set(zeroed).isDisjoint(with: changed.nonZeroFrames), Set(zeroed).isDisjoint(with: repatched.nonZeroFrames),
              Set(changed.nonZeroFrames).isDisjoint(with: repatched.nonZeroFrames) else {
            throw StasisError(.corrupted, "frame list delta zeroes frames out of order or outside the file, or lists a frame twice")
        }
        guard unpatched.count % 2 == 0 else { throw StasisError(.corrupted, "frame list delta drops page patches that are not whole pairs") }
        self.base = try container.decode(String.self, forKey: .base)
        self.changed = changed
        self.repatched = repatched
        self.unpatched = unpatched
        self.zeroed = zeroed
        self.digest = try container.decode(String.self, forKey: .digest)
    }
}

/// One non-zero frame of a list as a value: its chunk, whether that is a delta against the
/// reference, and its page patches.
private struct FrameEntry: Equatable {
    var ref: ChunkRef
    var isDelta: Bool
    var patches: [FrameList.PagePatch]

    init(ref: ChunkRef, isDelta: Bool, patches: [FrameList.PagePatch]) {
        self.ref = ref
        self.isDelta = isDelta
        self.patches = patches
    }

    init(_ list: FrameList, _ position: Int) {
        self.init(ref: list.ref(at: position), isDelta: list.isDelta(at: position), patches: list.patches(at: position))
    }
}

/// Frames gathered by index, made into a `FrameList` at the end.
private struct EntryList {
    var frames: [(index: Int, ref: ChunkRef)] = []
    var patches: [Int: [FrameList.PagePatch]] = [:]
    var deltaChunks: Set<String> = []

    mutating func add(_ index: Int, _ entry: FrameEntry) {
        frames.append((index, entry.ref))
        if !entry.patches.isEmpty { patches[index] = entry.patches }
        if entry.isDelta { deltaChunks.insert(entry.ref.hash) }
    }

    func frameList(frameSize: Int, totalSize: Int, reference: FrameReference.Identity?) throws -> FrameList {
        try FrameList(frameSize: frameSize, totalSize: totalSize, frames: frames, patches: patches,
                      reference: deltaChunks.isEmpty ? nil : reference, deltaChunks: deltaChunks)
    }

    func frameList(like list: FrameList) throws -> FrameList {
        try frameList(frameSize: list.frameSize, totalSize: list.totalSize, reference: list.reference)
    }
}
