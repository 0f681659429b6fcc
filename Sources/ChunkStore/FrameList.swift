import Crypto
import Foundation
import StasisCore

/// A file cut into fixed-size frames: its size, the frame size, and for each frame the chunk that
/// holds it or nothing (all zeros). The last frame may be shorter than the others.
///
/// Kept compact for manifests: distinct chunks are listed once, and the JSON `frames` array holds
/// one number per non-zero frame (an index into `chunks`) and one negative number per run of zero
/// frames (minus its length), so a 512 MiB memory file that is mostly zero costs a few numbers
/// for its holes. In memory only non-zero frames take space, so a damaged size cannot make
/// decoding allocate for frames that are not listed.
///
/// Two granularities: a frame is one chunk, or (version 2) one chunk plus a few 4 KiB pages
/// stored on their own over it (`PagePatch`), so a frame that differs from an already stored
/// one in a page or two costs those pages, not a whole frame. A patch is always over a whole
/// chunk, never over another patch: reading a frame is at most one chunk and its pages.
///
/// Version 3 adds delta chunks, compressed against bytes the reader already has: a frame's chunk
/// against the reference's bytes for that frame (`FrameReference`: the guest kernel), a page
/// patch against the page it replaces in the frame's chunk (most changed pages differ from
/// their old content in a few words). It also adds packed chunks: page patches kept in one pack
/// file beside the list (`packed`: each one's offset there) rather than one store file each,
/// because a few hundred bytes in a file of their own take a whole file system block.
///
/// Version 4 keeps packs in the chunk store, named by their content (`packs`), so a page patch
/// that outlives its snapshot stays where it was written and later lists name that pack and
/// offset; version 3's packed chunks are in "the list's own pack", a file beside it (`ownPack`).
///
/// Version 5 is version 4 with its long arrays (chunks, sizes, frames, patches, deltas, packs,
/// packed) as base64 text (`PackedNumbers`): decoding them as JSON arrays was most of the time a
/// restore spent finding a long session's snapshot. Every version is still read.
public struct FrameList: Codable, Equatable, Sendable {
    /// The format written (but for a version 3 list read back, which keeps its own pack) and the
    /// newest read.
    public static let currentVersion = 5
    /// The name version 3 lists give their only pack: the file kept beside the list.
    public static let ownPack = ""
    /// The granularity of patches: one guest page.
    public static let pageSize = 4 << 10
    /// The smallest frame size: one guest page.
    public static let minFrameSize = 4 << 10
    /// The largest frame size.
    public static let maxFrameSize = 2 << 20
    /// The largest file a frame list describes (4 TiB), a bound for damaged input.
    public static let maxTotalSize = 1 << 42

    /// Bytes per frame (a power of two, 4 KiB…2 MiB).
    public let frameSize: Int
    /// The file's size in bytes.
    public let totalSize: Int
    /// Distinct chunk hashes, in order of first use.
    public let chunks: [String]
    /// Stored size of each entry of `chunks`.
    public let storedSizes: [Int]
    /// Indices of the non-zero frames, ascending.
    public let nonZeroFrames: [Int]
    /// For each entry of `nonZeroFrames`, its chunk's position in `chunks`.
    let chunkOfFrame: [Int]
    /// Pages stored over a frame's chunk, by position in `nonZeroFrames`; pages ascending.
    let patchesAt: [Int: [StoredPatch]]
    /// The file delta chunks are compressed against, if any.
    public let reference: FrameReference.Identity?
    /// Positions in `chunks` of delta chunks: a frame's chunk (against the reference) or a page
    /// patch (against the page beneath it); a chunk is never both, their sizes differ.
    let deltaSlots: Set<Int>
    /// The packs packed chunks are in: chunk store pack names, or `ownPack` alone (version 3).
    public let packs: [String]
    /// Positions in `chunks` of page chunks kept in a pack, with the pack's position in `packs`
    /// and their offset there.
    let packedAt: [Int: PackedSlot]

    /// Where a packed chunk is, as kept: the pack's position in `packs`, and the offset.
    struct PackedSlot: Equatable, Sendable {
        var pack: Int
        var offset: Int
    }

    /// Where a packed chunk is: a pack's name (`ownPack` for a version 3 list's own file) and
    /// the chunk's offset in it.
    public struct PackLocation: Hashable, Sendable {
        public var pack: String
        public var offset: Int

        public init(pack: String, offset: Int) {
            self.pack = pack
            self.offset = offset
        }
    }

    /// A page patch as kept: the page and its chunk's position in `chunks`, or -1 for zeros.
    struct StoredPatch: Equatable, Sendable {
        var page: Int
        var slot: Int
    }

    /// A page of a frame stored on its own over the frame's chunk; nil chunk: the page is zeros.
    /// `isDelta`: the chunk is compressed against the page of the frame's chunk it replaces.
    /// `packed`: the chunk is in that pack, at that offset, rather than a file of the store.
    public struct PagePatch: Equatable, Sendable {
        public var page: Int
        public var chunk: ChunkRef?
        public var isDelta: Bool
        public var packed: PackLocation?

        public init(page: Int, chunk: ChunkRef?, isDelta: Bool = false, packed: PackLocation? = nil) {
            self.page = page
            self.chunk = chunk
            self.isDelta = isDelta && chunk != nil
            self.packed = chunk == nil ? nil : packed
        }
    }
    /// "sha256f:" + SHA-256 over frame size, total size and each non-zero frame's index and chunk
    /// hash: equal for equal contents, whatever the zstd level.
    public let digest: String

    /// The number of frames, zero or not.
    public var frameCount: Int { (totalSize + frameSize - 1) / frameSize }
    /// The sum of the distinct chunks' stored sizes.
    public var storedBytes: Int { storedSizes.reduce(0, +) }
    /// Frames stored as a chunk plus page patches.
    public var patchedFrames: Int { patchesAt.count }
    /// Frames whose chunk is a delta against the reference.
    public var deltaFrames: Int { chunkOfFrame.filter(deltaSlots.contains).count }
    /// Stored bytes of the frames' delta chunks (not counting page deltas).
    public var deltaBytes: Int { Set(chunkOfFrame).intersection(deltaSlots).reduce(0) { $0 + storedSizes[$1] } }
    /// The chunks that are files of the chunk store (not in the pack).
    public var storeChunks: [String] { chunks.indices.filter { packedAt[$0] == nil }.map { chunks[$0] } }
    /// The chunks in packs: where each is, and its stored size.
    public var packedChunks: [String: (location: PackLocation, storedSize: Int)] {
        Dictionary(uniqueKeysWithValues: packedAt.map { slot, place in
            (chunks[slot], (PackLocation(pack: packs[place.pack], offset: place.offset), storedSizes[slot]))
        })
    }
    /// Bytes of chunks in packs.
    public var packedBytes: Int { packedAt.keys.reduce(0) { $0 + storedSizes[$1] } }
    /// Bytes of chunks in the list's own pack file (version 3 lists only).
    public var ownPackBytes: Int { packs == [FrameList.ownPack] ? packedBytes : 0 }
    /// The length each pack must have at least, by name.
    public var packLengths: [String: Int] {
        var lengths: [String: Int] = [:]
        for (slot, place) in packedAt {
            lengths[packs[place.pack]] = max(lengths[packs[place.pack]] ?? 0, place.offset + storedSizes[slot])
        }
        return lengths
    }

    /// A frame list from the non-zero frames' chunks (any order), and page patches over some of
    /// them keyed by frame index; every other frame is zero. `deltaChunks` are chunks compressed
    /// against `reference`, each used only by frames inside its segments; patches say themselves
    /// whether they are deltas.
    public init(frameSize: Int, totalSize: Int, frames: some Sequence<(index: Int, ref: ChunkRef)>,
                patches: [Int: [PagePatch]] = [:], reference: FrameReference.Identity? = nil,
                deltaChunks: Set<String> = []) throws {
        var packed: [String: PackLocation] = [:]
        try FrameList.checkGeometry(frameSize: frameSize, totalSize: totalSize, error: .invalidArgument)
        if let reference { try FrameList.checkReference(reference, totalSize: totalSize, error: .invalidArgument) }

        let sorted = frames.sorted { $0.index < $1.index }
        let frameCount = (totalSize + frameSize - 1) / frameSize
        var chunks: [String] = []
        var storedSizes: [Int] = []
        var position: [String: Int] = [:]
        var indices: [Int] = []
        var chunkOfFrame: [Int] = []
        var patchesAt: [Int: [StoredPatch]] = [:]
        var patchDeltas = Set<Int>()
        indices.reserveCapacity(sorted.count)
        chunkOfFrame.reserveCapacity(sorted.count)
        func slot(of ref: ChunkRef) -> Int {
            if let known = position[ref.hash] { return known }
            position[ref.hash] = chunks.count
            chunks.append(ref.hash)
            storedSizes.append(ref.storedSize)
            return chunks.count - 1
        }
        for (index, ref) in sorted {
            guard index >= 0, index < frameCount, index != indices.last else {
                throw StasisError(.invalidArgument, "frame \(index) is listed twice or outside 0..<\(frameCount)")
            }
            let raw = FrameList.rawSize(ofFrame: index, frameSize: frameSize, totalSize: totalSize)
            guard Hex.isDigest(ref.hash), ref.rawSize == raw, ref.storedSize > 0 else {
                throw StasisError(.invalidArgument, "frame \(index) cannot hold chunk \(ref.hash.prefix(80)) of \(ref.rawSize) bytes")
            }
            let frameSlot = slot(of: ref)
            if let pages = patches[index], !pages.isEmpty {
                var stored: [StoredPatch] = []
                for patch in pages.sorted(by: { $0.page < $1.page }) {
                    let pageRaw = FrameList.rawSize(ofPage: patch.page, frameRawSize: raw)
                    guard frameSize > FrameList.pageSize, pageRaw > 0, patch.page != stored.last?.page else {
                        throw StasisError(.invalidArgument, "frame \(index) cannot take a patch of page \(patch.page)")
                    }
                    if let chunk = patch.chunk {
                        guard Hex.isDigest(chunk.hash), chunk.rawSize == pageRaw, chunk.storedSize > 0 else {
                            throw StasisError(.invalidArgument, "page \(patch.page) of frame \(index) cannot hold chunk \(chunk.hash.prefix(80)) of \(chunk.rawSize) bytes")
                        }
                        let chunkSlot = slot(of: chunk)
                        if patch.isDelta { patchDeltas.insert(chunkSlot) }
                        if let location = patch.packed { packed[chunk.hash] = location }
                        stored.append(StoredPatch(page: patch.page, slot: chunkSlot))
                    } else {
                        stored.append(StoredPatch(page: patch.page, slot: -1))
                    }
                }
                patchesAt[indices.count] = stored
            }
            indices.append(index)
            chunkOfFrame.append(frameSlot)
        }
        guard Set(patches.keys.filter { patches[$0]?.isEmpty == false }).isSubset(of: Set(indices)) else {
            throw StasisError(.invalidArgument, "a patch is over a frame that has no chunk")
        }
        let deltaSlots = Set(deltaChunks.compactMap { position[$0] }).union(patchDeltas)
        try FrameList.checkDeltas(deltaSlots, frames: indices, chunkOfFrame: chunkOfFrame, patches: patchesAt, frameSize: frameSize,
                                  totalSize: totalSize, reference: reference, error: .invalidArgument)
        var packs: [String] = []
        var packNumber: [String: Int] = [:]  // a 1,000-turn session's list names ~600 packs
        var packedAt: [Int: PackedSlot] = [:]
        for (hash, location) in packed.sorted(by: { $0.key < $1.key }) {
            guard let slot = position[hash] else { continue }
            let pack = packNumber[location.pack] ?? packs.count
            if pack == packs.count {
                packNumber[location.pack] = pack
                packs.append(location.pack)
            }
            packedAt[slot] = PackedSlot(pack: pack, offset: location.offset)
        }
        try FrameList.checkPacked(packedAt, packs: packs, chunkOfFrame: chunkOfFrame, error: .invalidArgument)
        self.frameSize = frameSize
        self.totalSize = totalSize
        self.chunks = chunks
        self.storedSizes = storedSizes
        self.nonZeroFrames = indices
        self.chunkOfFrame = chunkOfFrame
        self.patchesAt = patchesAt
        self.reference = reference
        self.deltaSlots = deltaSlots
        self.packs = packs
        self.packedAt = packedAt
        self.digest = FrameList.digest(frameSize: frameSize, totalSize: totalSize, frames: indices, chunkOfFrame: chunkOfFrame,
                                       chunks: chunks, patches: patchesAt, reference: reference, deltaSlots: deltaSlots,
                                       packs: packs, packedAt: packedAt)
    }

    /// Whether the `position`-th non-zero frame's chunk is a delta against the reference.
    func isDelta(at position: Int) -> Bool { deltaSlots.contains(chunkOfFrame[position]) }

    /// The uncompressed length of frame `index`.
    public func rawSize(ofFrame index: Int) -> Int {
        FrameList.rawSize(ofFrame: index, frameSize: frameSize, totalSize: totalSize)
    }

    /// The chunk holding frame `index`, or nil if that frame is all zeros (or out of range).
    public func chunk(ofFrame index: Int) -> ChunkRef? {
        var low = 0
        var high = nonZeroFrames.count
        while low < high {
            let middle = (low + high) / 2
            if nonZeroFrames[middle] < index { low = middle + 1 } else { high = middle }
        }
        guard low < nonZeroFrames.count, nonZeroFrames[low] == index else { return nil }
        return ref(at: low)
    }

    /// The first frame stored in chunk `chunks[position]` (as its chunk or a page patch), to
    /// name it in an error.
    public func frameIndex(ofChunk position: Int) -> Int? {
        if let frame = chunkOfFrame.firstIndex(of: position) { return nonZeroFrames[frame] }
        return patchesAt.filter { $0.value.contains { $0.slot == position } }.keys.min().map { nonZeroFrames[$0] }
    }

    /// This list with stored frame `index` held by `ref`, a chunk no other frame or page uses,
    /// in the same form as the one it replaces (a delta against the reference if that one was),
    /// and all else as it was: patches, reference and the other delta chunks. For tests and tools
    /// that damage or mend one frame.
    public func replacingChunk(ofFrame index: Int, with ref: ChunkRef) throws -> FrameList {
        guard let replaced = nonZeroFrames.firstIndex(of: index) else {
            throw StasisError(.invalidArgument, "frame \(index) is not stored in this list, so it has no chunk to replace")
        }
        guard !chunks.contains(ref.hash) else {
            throw StasisError(.invalidArgument, "chunk \(ref.hash) is already in this list")
        }
        var frames: [(index: Int, ref: ChunkRef)] = []
        var patches: [Int: [PagePatch]] = [:]
        var deltas: Set<String> = []
        for position in nonZeroFrames.indices {
            let frame = nonZeroFrames[position]
            let chunk = position == replaced ? ref : self.ref(at: position)
            frames.append((frame, chunk))
            if isDelta(at: position) { deltas.insert(chunk.hash) }
            let stored = self.patches(at: position)
            if !stored.isEmpty { patches[frame] = stored }
        }
        return try FrameList(frameSize: frameSize, totalSize: totalSize, frames: frames, patches: patches, reference: reference, deltaChunks: deltas)
    }

    /// The page patches over the `position`-th non-zero frame's chunk (none for most frames).
    func patches(at position: Int) -> [PagePatch] {
        guard let stored = patchesAt[position] else { return [] }
        let frameRaw = rawSize(ofFrame: nonZeroFrames[position])
        return stored.map { patch in
            PagePatch(page: patch.page, chunk: patch.slot < 0 ? nil : ChunkRef(
                hash: chunks[patch.slot], rawSize: FrameList.rawSize(ofPage: patch.page, frameRawSize: frameRaw),
                storedSize: storedSizes[patch.slot]), isDelta: deltaSlots.contains(patch.slot),
                packed: patch.slot < 0 ? nil : packedAt[patch.slot].map { PackLocation(pack: packs[$0.pack], offset: $0.offset) })
        }
    }

    /// The length of page `page` of a frame of `frameRawSize` bytes (0 past its end).
    static func rawSize(ofPage page: Int, frameRawSize: Int) -> Int {
        guard page >= 0, page < maxFrameSize / pageSize else { return 0 }
        return max(0, min(pageSize, frameRawSize - page * pageSize))
    }

    /// The chunk of the `position`-th non-zero frame.
    func ref(at position: Int) -> ChunkRef {
        let slot = chunkOfFrame[position]
        return ChunkRef(hash: chunks[slot], rawSize: rawSize(ofFrame: nonZeroFrames[position]), storedSize: storedSizes[slot])
    }

    private static func rawSize(ofFrame index: Int, frameSize: Int, totalSize: Int) -> Int {
        max(0, min(frameSize, totalSize - index * frameSize))
    }

    private static func checkGeometry(frameSize: Int, totalSize: Int, error code: StasisError.Code) throws {
        guard frameSize >= minFrameSize, frameSize <= maxFrameSize, frameSize & (frameSize - 1) == 0 else {
            throw StasisError(code, "frame size \(frameSize) is not a power of two from 4 KiB to 2 MiB")
        }
        guard totalSize >= 0, totalSize <= maxTotalSize else {
            throw StasisError(code, "file size \(totalSize) is outside 0…\(maxTotalSize)")
        }
    }

    /// A reference's digest must be "sha256:" and 64 hex digits, its segments non-empty, inside
    /// the file, ascending and apart.
    private static func checkReference(_ reference: FrameReference.Identity, totalSize: Int, error code: StasisError.Code) throws {
        guard reference.digest.hasPrefix("sha256:"), Hex.isDigest(String(reference.digest.dropFirst(7))) else {
            throw StasisError(code, "frame list reference digest '\(reference.digest.prefix(80))' is not sha256:<64 hex digits>")
        }
        guard reference.segments.count <= 64 else {
            throw StasisError(code, "frame list reference has \(reference.segments.count) segments; at most 64")
        }
        var end = 0
        for segment in reference.segments {
            guard segment.length > 0, segment.offset >= end, segment.fileOffset >= 0, segment.fileOffset <= maxTotalSize,
                  segment.length <= totalSize - segment.offset else {
                throw StasisError(code, "frame list reference segment \(segment.offset)+\(segment.length) (at \(segment.fileOffset)) overlaps another or lies outside the file")
            }
            end = segment.offset + segment.length
        }
    }

    /// Every frame whose chunk is a delta has a reference and lies inside one of its segments,
    /// and no delta chunk serves both as a frame's chunk and as a page.
    private static func checkDeltas(_ deltaSlots: Set<Int>, frames: [Int], chunkOfFrame: [Int], patches: [Int: [StoredPatch]],
                                    frameSize: Int, totalSize: Int, reference: FrameReference.Identity?,
                                    error code: StasisError.Code) throws {
        guard !deltaSlots.isEmpty else { return }
        for (index, slot) in zip(frames, chunkOfFrame) where deltaSlots.contains(slot) {
            let raw = rawSize(ofFrame: index, frameSize: frameSize, totalSize: totalSize)
            guard let reference else { throw StasisError(code, "frame \(index) is a delta but the list has no reference") }
            guard reference.fileOffset(forFrameAt: index * frameSize, length: raw) != nil else {
                throw StasisError(code, "frame \(index) is a delta but lies outside the reference's segments")
            }
        }
        let frameChunks = Set(chunkOfFrame)
        if patches.values.contains(where: { $0.contains { $0.slot >= 0 && deltaSlots.contains($0.slot) && frameChunks.contains($0.slot) } }) {
            throw StasisError(code, "frame list has a delta chunk that is both a frame and a page")
        }
    }

    /// Packed chunks are pages only (a frame's chunk is a store file), at offsets a file can have,
    /// in packs listed once each and used: store pack names, or the own pack alone.
    private static func checkPacked(_ packedAt: [Int: PackedSlot], packs: [String], chunkOfFrame: [Int], error code: StasisError.Code) throws {
        guard packs.isEmpty || packs == [ownPack] || (packs.allSatisfy(Hex.isDigest) && Set(packs).count == packs.count) else {
            throw StasisError(code, "frame list names a pack that is malformed or listed twice, or mixes its own pack with shared ones")
        }
        guard Set(packedAt.values.map(\.pack)) == Set(packs.indices) else {
            throw StasisError(code, "frame list names a pack outside 0..<\(packs.count), or one no chunk is in")
        }
        guard !packedAt.isEmpty else { return }
        guard packedAt.values.allSatisfy({ $0.offset >= 0 && $0.offset <= maxTotalSize }) else {
            throw StasisError(code, "frame list has a packed chunk at an offset outside 0…\(maxTotalSize)")
        }
        guard Set(chunkOfFrame).isDisjoint(with: packedAt.keys) else {
            throw StasisError(code, "frame list packs a frame's chunk; only pages are packed")
        }
    }

    private static func digest(frameSize: Int, totalSize: Int, frames: [Int], chunkOfFrame: [Int], chunks: [String],
                               patches: [Int: [StoredPatch]], reference: FrameReference.Identity?, deltaSlots: Set<Int>,
                               packs: [String], packedAt: [Int: PackedSlot]) -> String {
        // The bytes are gathered into one buffer and hashed at once: thousands of 8- and 32-byte
        // updates cost several times the hashing itself (a restore computes this twice).
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64 + frames.count * 40 + patches.count * 48 + packedAt.count * 80)
        bytes.append(contentsOf: "stasis.framelist.1".utf8)
        func add(_ value: Int) { withUnsafeBytes(of: UInt64(value).littleEndian) { bytes.append(contentsOf: $0) } }
        // Each name as its 32 raw bytes (the names were checked as hex), converted once: a
        // chunk is named again by every frame and page that uses it.
        var names: [UInt8] = []
        names.reserveCapacity(chunks.count * 32)
        for chunk in chunks { Hex.append(chunk, to: &names) }
        func addChunk(_ slot: Int) { bytes.append(contentsOf: names[slot * 32 ..< slot * 32 + 32]) }
        add(frameSize)
        add(totalSize)
        for (index, slot) in zip(frames, chunkOfFrame) {
            add(index)
            addChunk(slot)
        }
        // Lists without patches keep the digest version 1 gave them.
        if !patches.isEmpty {
            bytes.append(contentsOf: "patches".utf8)
            for position in patches.keys.sorted() {
                for patch in patches[position] ?? [] {
                    add(frames[position])
                    add(patch.page)
                    if patch.slot < 0 { bytes.append(contentsOf: repeatElement(0, count: 32)) } else { addChunk(patch.slot) }
                }
            }
        }
        if let reference {
            bytes.append(contentsOf: "reference \(reference.digest)".utf8)
            for segment in reference.segments {
                add(segment.offset)
                add(segment.fileOffset)
                add(segment.length)
            }
        }
        if !deltaSlots.isEmpty {
            bytes.append(contentsOf: "deltas".utf8)
            for slot in deltaSlots.sorted() { addChunk(slot) }
        }
        if packs == [ownPack] {
            // Version 3: one pack, the list's own; its digests stay what they were.
            bytes.append(contentsOf: "packed".utf8)
            for slot in packedAt.keys.sorted() {
                addChunk(slot)
                add(packedAt[slot]?.offset ?? 0)
            }
        } else if !packedAt.isEmpty {
            bytes.append(contentsOf: "packs".utf8)
            for slot in packedAt.keys.sorted() {
                guard let place = packedAt[slot] else { continue }
                addChunk(slot)
                Hex.append(packs[place.pack], to: &bytes)
                add(place.offset)
            }
        }
        return "sha256f:" + Hex.encode(SHA256.hash(data: bytes))
    }

    // MARK: Codable

    private enum CodingKeys: String, CodingKey {
        case version, frameSize, totalSize, chunks, storedSizes, frames, patches, reference, deltas, packed, packs, digest
    }

    private enum ReferenceKeys: String, CodingKey {
        case digest, segments
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        let ownPackOnly = packs == [FrameList.ownPack]
        // A version 3 list read back (its pack beside it) keeps its version; all else is 5.
        let version = ownPackOnly ? 3 : FrameList.currentVersion
        func put(_ values: [Int], _ key: CodingKeys) throws {
            if version >= 5 { try container.encode(PackedNumbers.encode(values), forKey: key) } else { try container.encode(values, forKey: key) }
        }
        func put(digests: [String], _ key: CodingKeys) throws {
            if version >= 5 { try container.encode(PackedNumbers.encode(digests: digests), forKey: key) } else { try container.encode(digests, forKey: key) }
        }
        try container.encode(version, forKey: .version)
        try container.encode(frameSize, forKey: .frameSize)
        try container.encode(totalSize, forKey: .totalSize)
        try put(digests: chunks, .chunks)
        try put(storedSizes, .storedSizes)
        var runs: [Int] = []
        var next = 0
        for (index, slot) in zip(nonZeroFrames, chunkOfFrame) {
            if index > next { runs.append(next - index) }
            runs.append(slot)
            next = index + 1
        }
        if frameCount > next { runs.append(next - frameCount) }
        try put(runs, .frames)
        if !patchesAt.isEmpty {
            // Flat triples: frame index, page, chunk position (-1: a page of zeros).
            var triples: [Int] = []
            for position in patchesAt.keys.sorted() {
                for patch in patchesAt[position] ?? [] { triples += [nonZeroFrames[position], patch.page, patch.slot] }
            }
            try put(triples, .patches)
        }
        if let reference {
            var nested = container.nestedContainer(keyedBy: ReferenceKeys.self, forKey: .reference)
            try nested.encode(reference.digest, forKey: .digest)
            // Flat triples: offset in the file, offset in the reference, length.
            try nested.encode(reference.segments.flatMap { [$0.offset, $0.fileOffset, $0.length] }, forKey: .segments)
        }
        if !deltaSlots.isEmpty { try put(deltaSlots.sorted(), .deltas) }
        if ownPackOnly {
            // Flat pairs: chunk position, offset in the list's own pack file.
            try put(packedAt.keys.sorted().flatMap { [$0, packedAt[$0]?.offset ?? 0] }, .packed)
        } else if !packs.isEmpty {
            // Flat triples: chunk position, pack position, offset in the pack.
            try put(digests: packs, .packs)
            try put(packedAt.keys.sorted().flatMap { [$0, packedAt[$0]?.pack ?? 0, packedAt[$0]?.offset ?? 0] }, .packed)
        }
        try container.encode(digest, forKey: .digest)
    }

    /// Decodes and checks everything: geometry, hashes, sizes, runs that add up to exactly the
    /// frame count, every chunk used, and the digest. Damage is `.corrupted`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let version = try container.decode(Int.self, forKey: .version)
        guard (1 ... FrameList.currentVersion).contains(version) else {
            throw StasisError(.unsupported, "frame list version \(version); this stasis reads versions 1 to \(FrameList.currentVersion)")
        }
        let frameSize = try container.decode(Int.self, forKey: .frameSize)
        let totalSize = try container.decode(Int.self, forKey: .totalSize)
        try FrameList.checkGeometry(frameSize: frameSize, totalSize: totalSize, error: .corrupted)
        // Version 5 packs the long arrays into base64 text (`PackedNumbers`).
        func numbers(_ key: CodingKeys) throws -> [Int]? {
            guard version >= 5 else { return try container.decodeIfPresent([Int].self, forKey: key) }
            return try container.decodeIfPresent(String.self, forKey: key).map { try PackedNumbers.decode($0, field: key.stringValue) }
        }
        func digests(_ key: CodingKeys) throws -> [String]? {
            guard version >= 5 else { return try container.decodeIfPresent([String].self, forKey: key) }
            return try container.decodeIfPresent(String.self, forKey: key).map { try PackedNumbers.decodeDigests($0, field: key.stringValue) }
        }
        func required<T>(_ value: T?, _ key: CodingKeys) throws -> T {
            guard let value else { throw StasisError(.corrupted, "frame list has no \(key.stringValue)") }
            return value
        }
        let chunks = try required(digests(.chunks), .chunks)
        let storedSizes = try required(numbers(.storedSizes), .storedSizes)
        let runs = try required(numbers(.frames), .frames)
        let triples = version >= 2 ? try numbers(.patches) ?? [] : []
        var reference: FrameReference.Identity? = nil
        var deltas: [Int] = []
        if version >= 3, container.contains(.reference) {
            let nested = try container.nestedContainer(keyedBy: ReferenceKeys.self, forKey: .reference)
            let flat = try nested.decode([Int].self, forKey: .segments)
            guard flat.count % 3 == 0 else { throw StasisError(.corrupted, "frame list reference segments are not whole triples") }
            let segments = stride(from: 0, to: flat.count, by: 3).map {
                FrameReference.Segment(offset: flat[$0], fileOffset: flat[$0 + 1], length: flat[$0 + 2])
            }
            reference = FrameReference.Identity(digest: try nested.decode(String.self, forKey: .digest), segments: segments)
        }
        if version >= 3 { deltas = try numbers(.deltas) ?? [] }
        let packedNumbers = version >= 3 ? try numbers(.packed) ?? [] : []
        let packNames = version >= 4 ? try digests(.packs) ?? [] : []
        let digest = try container.decode(String.self, forKey: .digest)
        guard storedSizes.count == chunks.count else {
            throw StasisError(.corrupted, "frame list has \(chunks.count) chunks but \(storedSizes.count) stored sizes")
        }
        guard chunks.allSatisfy(Hex.isDigest), Set(chunks).count == chunks.count else {
            throw StasisError(.corrupted, "frame list has a chunk hash that is malformed or listed twice")
        }
        let bound = Zstd.compressBound(frameSize)
        guard storedSizes.allSatisfy({ $0 > 0 && $0 <= bound }) else {
            throw StasisError(.corrupted, "frame list has a stored size outside 1…\(bound)")
        }
        let frameCount = (totalSize + frameSize - 1) / frameSize
        var indices: [Int] = []
        var chunkOfFrame: [Int] = []
        var used = [Bool](repeating: false, count: chunks.count)
        var position = 0
        for value in runs {
            if value >= 0 {
                guard value < chunks.count, position < frameCount else {
                    throw StasisError(.corrupted, "frame list names chunk \(value) of \(chunks.count) at frame \(position) of \(frameCount)")
                }
                indices.append(position)
                chunkOfFrame.append(value)
                used[value] = true
                position += 1
            } else {
                // Int.min has no negation; any run longer than the frames left is damage.
                guard value != Int.min, -value <= frameCount - position else {
                    throw StasisError(.corrupted, "frame list has a run of \(value) zero frames at frame \(position) of \(frameCount)")
                }
                position -= value
            }
        }
        guard position == frameCount else {
            throw StasisError(.corrupted, "frame list covers \(position) frames; the file has \(frameCount)")
        }
        let patchesAt = try FrameList.decodePatches(triples, frames: indices, frameSize: frameSize, totalSize: totalSize,
                                                    chunkCount: chunks.count, used: &used)
        guard used.allSatisfy({ $0 }) else { throw StasisError(.corrupted, "frame list lists a chunk no frame uses") }
        if let reference { try FrameList.checkReference(reference, totalSize: totalSize, error: .corrupted) }
        guard deltas.allSatisfy({ $0 >= 0 && $0 < chunks.count }), Set(deltas).count == deltas.count else {
            throw StasisError(.corrupted, "frame list names a delta chunk twice or outside 0..<\(chunks.count)")
        }
        let deltaSlots = Set(deltas)
        try FrameList.checkDeltas(deltaSlots, frames: indices, chunkOfFrame: chunkOfFrame, patches: patchesAt, frameSize: frameSize,
                                  totalSize: totalSize, reference: reference, error: .corrupted)
        // Version 3: pairs in the own pack; version 4: triples naming a pack.
        let width = version >= 4 ? 3 : 2
        let packs = version >= 4 ? packNames : packedNumbers.isEmpty ? [] : [FrameList.ownPack]
        guard packedNumbers.count % width == 0 else {
            throw StasisError(.corrupted, "frame list packed chunks are not whole \(width == 3 ? "triples" : "pairs")")
        }
        var packedAt: [Int: PackedSlot] = [:]
        for start in stride(from: 0, to: packedNumbers.count, by: width) {
            let slot = packedNumbers[start]
            let pack = width == 3 ? packedNumbers[start + 1] : 0
            guard slot >= 0, slot < chunks.count, packedAt[slot] == nil, pack >= 0, pack < packs.count else {
                throw StasisError(.corrupted, "frame list packs chunk \(slot) of \(chunks.count) in pack \(pack) of \(packs.count), or twice")
            }
            packedAt[slot] = PackedSlot(pack: pack, offset: packedNumbers[start + width - 1])
        }
        try FrameList.checkPacked(packedAt, packs: packs, chunkOfFrame: chunkOfFrame, error: .corrupted)
        let computed = FrameList.digest(frameSize: frameSize, totalSize: totalSize, frames: indices, chunkOfFrame: chunkOfFrame,
                                        chunks: chunks, patches: patchesAt, reference: reference, deltaSlots: deltaSlots,
                                        packs: packs, packedAt: packedAt)
        guard computed == digest else {
            throw StasisError(.corrupted, "frame list digest is \(digest.prefix(80)); its content gives \(computed)")
        }
        self.frameSize = frameSize
        self.totalSize = totalSize
        self.chunks = chunks
        self.storedSizes = storedSizes
        self.nonZeroFrames = indices
        self.chunkOfFrame = chunkOfFrame
        self.patchesAt = patchesAt
        self.reference = reference
        self.deltaSlots = deltaSlots
        self.packs = packs
        self.packedAt = packedAt
        self.digest = digest
    }

    /// Checks flat patch triples: whole triples, strictly ascending by frame then page, each over
    /// a listed frame, inside it, naming a chunk or -1.
    private static func decodePatches(_ triples: [Int], frames: [Int], frameSize: Int, totalSize: Int, chunkCount: Int,
                                      used: inout [Bool]) throws -> [Int: [StoredPatch]] {
        guard triples.count % 3 == 0 else { throw StasisError(.corrupted, "frame list patches are not whole triples") }
        guard triples.isEmpty || frameSize > pageSize else {
            throw StasisError(.corrupted, "frame list has patches on \(frameSize)-byte frames")
        }
        var patches: [Int: [StoredPatch]] = [:]
        var last: (frame: Int, page: Int)? = nil
        var position = 0
        for start in stride(from: 0, to: triples.count, by: 3) {
            let (frame, page, slot) = (triples[start], triples[start + 1], triples[start + 2])
            if let last, frame < last.frame || (frame == last.frame && page <= last.page) {
                throw StasisError(.corrupted, "frame list patches are out of order at frame \(frame) page \(page)")
            }
            while position < frames.count && frames[position] < frame { position += 1 }
            guard position < frames.count, frames[position] == frame else {
                throw StasisError(.corrupted, "frame list patches frame \(frame), which has no chunk")
            }
            let frameRaw = rawSize(ofFrame: frame, frameSize: frameSize, totalSize: totalSize)
            guard rawSize(ofPage: page, frameRawSize: frameRaw) > 0 else {
                throw StasisError(.corrupted, "frame list patches page \(page) of frame \(frame), outside its \(frameRaw) bytes")
            }
            guard slot >= -1, slot < chunkCount else {
                throw StasisError(.corrupted, "frame list patch names chunk \(slot) of \(chunkCount)")
            }
            if slot >= 0 { used[slot] = true }
            patches[position, default: []].append(StoredPatch(page: page, slot: slot))
            last = (frame, page)
        }
        return patches
    }
}
