import Foundation
import StasisCore

/// A frame list kept as the frames that differ from a base list: what a snapshot of a long
/// session stores instead of its whole list, since consecutive snapshots differ in ~100 of
/// ~1,400 frames and ~250 even 200 snapshots apart. The base is always a whole list, never
/// another delta, so reading one is two lists, however long the session.
public struct FrameListDelta: Codable, Equatable, Sendable {
    /// The format written and read.
    public static let currentVersion = 1

    /// The digest of the base list.
    public let base: String
    /// The frames that differ from the base's (a chunk, patches or delta flag changed, or the
    /// frame was zero there), every other frame zero.
    public let changed: FrameList
    /// Frames non-zero in the base and zero here, ascending.
    public let zeroed: [Int]
    /// The digest of the whole list: checked once it is put back together.
    public let digest: String

    /// What `list` differs in from `base`. Nil when they cannot be compared (other geometry or
    /// kernel reference): the list is then stored as a new base.
    public init?(_ list: FrameList, over base: FrameList) throws {
        guard list.frameSize == base.frameSize, list.totalSize == base.totalSize,
              list.reference == nil || base.reference == nil || list.reference == base.reference else { return nil }
        var frames: [(index: Int, ref: ChunkRef)] = []
        var patches: [Int: [FrameList.PagePatch]] = [:]
        var deltaChunks: Set<String> = []
        var zeroed: [Int] = []
        var theirs = 0
        for (position, index) in list.nonZeroFrames.enumerated() {
            while theirs < base.nonZeroFrames.count, base.nonZeroFrames[theirs] < index {
                zeroed.append(base.nonZeroFrames[theirs])
                theirs += 1
            }
            let entry = FrameEntry(list, position)
            if theirs < base.nonZeroFrames.count, base.nonZeroFrames[theirs] == index {
                defer { theirs += 1 }
                if FrameEntry(base, theirs) == entry { continue }
            }
            frames.append((index, entry.ref))
            if !entry.patches.isEmpty { patches[index] = entry.patches }
            if entry.isDelta { deltaChunks.insert(entry.ref.hash) }
        }
        zeroed += base.nonZeroFrames[theirs...]
        let reference = deltaChunks.isEmpty ? nil : list.reference
        self.base = base.digest
        self.changed = try FrameList(frameSize: list.frameSize, totalSize: list.totalSize, frames: frames, patches: patches,
                                     reference: reference, deltaChunks: deltaChunks)
        self.zeroed = zeroed
        self.digest = list.digest
    }

    /// The share of the list's non-zero frames this delta lists: past a bound, a new base is
    /// cheaper than ever longer deltas.
    public func changedShare(of list: FrameList) -> Double {
        Double(changed.nonZeroFrames.count + zeroed.count) / Double(max(1, list.nonZeroFrames.count))
    }

    /// The whole list: `base` with the changed frames put in and the zeroed ones taken out.
    /// A base other than the one this delta was made over, or a result whose digest is not the
    /// recorded one, is `.corrupted`.
    public func applied(to base: FrameList) throws -> FrameList {
        guard base.digest == self.base else {
            throw StasisError(.corrupted, "frame list delta is over base \(self.base.prefix(80)), not \(base.digest)")
        }
        guard changed.frameSize == base.frameSize, changed.totalSize == base.totalSize else {
            throw StasisError(.corrupted, "frame list delta has \(changed.frameSize)-byte frames over \(changed.totalSize) bytes; its base has \(base.frameSize) over \(base.totalSize)")
        }
        if let mine = changed.reference, let theirs = base.reference, mine != theirs {
            throw StasisError(.corrupted, "frame list delta is against another reference than its base")
        }
        let removed = Set(zeroed)
        let replaced = Set(changed.nonZeroFrames)
        var frames: [(index: Int, ref: ChunkRef)] = []
        var patches: [Int: [FrameList.PagePatch]] = [:]
        var deltaChunks: Set<String> = []
        for (list, positions) in [(base, base.nonZeroFrames.indices.filter { !removed.contains(base.nonZeroFrames[$0]) && !replaced.contains(base.nonZeroFrames[$0]) }),
                                  (changed, Array(changed.nonZeroFrames.indices))] {
            for position in positions {
                let entry = FrameEntry(list, position)
                let index = list.nonZeroFrames[position]
                frames.append((index, entry.ref))
                if !entry.patches.isEmpty { patches[index] = entry.patches }
                if entry.isDelta { deltaChunks.insert(entry.ref.hash) }
            }
        }
        let whole = try FrameList(frameSize: base.frameSize, totalSize: base.totalSize, frames: frames, patches: patches,
                                  reference: deltaChunks.isEmpty ? nil : (base.reference ?? changed.reference), deltaChunks: deltaChunks)
        guard whole.digest == digest else {
            throw StasisError(.corrupted, "frame list put back together has digest \(whole.digest); its delta recorded \(digest.prefix(80))")
        }
        return whole
    }

    private enum CodingKeys: String, CodingKey {
        case version, base, changed, zeroed, digest
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Self.currentVersion, forKey: .version)
        try container.encode(base, forKey: .base)
        try container.encode(changed, forKey: .changed)
        try container.encode(zeroed, forKey: .zeroed)
        try container.encode(digest, forKey: .digest)
    }

    /// Decodes and checks what can be checked without the base: the changed list (which checks
    /// itself), zeroed frames ascending, inside the file and not also changed.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let version = try container.decode(Int.self, forKey: .version)
        guard version == Self.currentVersion else {
            throw StasisError(.unsupported, "frame list delta version \(version); this stasis reads version \(Self.currentVersion)")
        }
        let changed = try container.decode(FrameList.self, forKey: .changed)
        let zeroed = try container.decode([Int].self, forKey: .zeroed)
        guard zeroed.allSatisfy({ $0 >= 0 && $0 < changed.frameCount }), zip(zeroed, zeroed.dropFirst()).allSatisfy({ $0 < $1 }),
              Set(zeroed).isDisjoint(with: changed.nonZeroFrames) else {
            throw StasisError(.corrupted, "frame list delta zeroes frames out of order, outside the file or also changed")
        }
        self.base = try container.decode(String.self, forKey: .base)
        self.changed = changed
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

    init(_ list: FrameList, _ position: Int) {
        ref = list.ref(at: position)
        isDelta = list.isDelta(at: position)
        patches = list.patches(at: position)
    }
}
