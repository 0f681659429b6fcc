import Foundation
import StasisCore
import Synchronization

/// Cuts a file into fixed-size frames and puts every non-zero frame into a `ChunkStore`, on
/// several threads. Holes of a sparse file are found with SEEK_DATA/SEEK_HOLE and never read, so
/// a 512 MiB memory file with 100 MiB in use costs 100 MiB of reading.
public struct FrameCutter: Sendable {
    /// The store frames go to.
    public let store: ChunkStore
    /// Bytes per frame.
    public let frameSize: Int
    /// Worker threads.
    public let workers: Int

    /// The bytes one worker reads at a time: big enough that a 4 KiB frame size does not mean
    /// one pread per page.
    static let batchBytes = 1 << 20

    /// A cutter for `frameSize` frames (a power of two, 4 KiB…2 MiB) using `workers` threads
    /// (default: twice the cores, at least 8, because writing a chunk waits on fsync).
    public init(store: ChunkStore, frameSize: Int = 64 << 10, workers: Int? = nil) throws {
        guard frameSize >= FrameList.minFrameSize, frameSize <= FrameList.maxFrameSize, frameSize & (frameSize - 1) == 0 else {
            throw StasisError(.invalidArgument, "frame size \(frameSize) is not a power of two from 4 KiB to 2 MiB")
        }
        self.store = store
        self.frameSize = frameSize
        self.workers = max(1, workers ?? ParallelWork.defaultWorkers())
    }

    /// Cuts the file at `url`, stores its frames, syncs the store's folders and returns the frame
    /// list. Blocks the calling thread; the file must not change meanwhile.
    ///
    /// With `base` (an earlier version of the file, its chunks in the store), a new frame whose
    /// base frame differs in at most `maxPatchPages` pages is stored as the base frame's chunk
    /// plus those pages: a small change costs its pages, not whole frames.
    ///
    /// With `reference`, a frame inside one of its segments is stored as a delta against the
    /// reference's bytes for it (`FrameReference`); `base` is then read with the same reference.
    ///
    /// `packing`, new page patches go into one pack of the store, instead of a store file each:
    /// a page delta of a few hundred bytes would otherwise take a whole file system block. A
    /// page patch the base already has in a pack of the store is listed where it is.
    public func cut(_ url: URL, base: FrameList? = nil, reference: FrameReference? = nil, packing: Bool = false) throws -> CutResult {
        let path = url.path
        let fd = try FileIO.openForReading(path)
        defer { close(fd) }
        let size = try FileIO.size(fd, path: path)
        return try cut(name: path, size: size, dataRanges: try SparseFile.dataRanges(fd, size: size),
                       base: base, reference: reference, packing: packing) { buffer, count, offset in
            try FileIO.read(fd, into: buffer, count: count, at: offset)
        }
    }

    /// Cuts bytes already in memory, as `cut(_:)` cuts a file: `dataRanges` are the byte ranges
    /// that may hold anything but zeros. `memory` must not change meanwhile.
    public func cut(memory: UnsafeRawBufferPointer, dataRanges: [Range<Int>], name: String, base: FrameList? = nil,
                    reference: FrameReference? = nil, packing: Bool = false) throws -> CutResult {
        let start = UInt(bitPattern: memory.baseAddress)
        let size = memory.count
        return try cut(name: name, size: size, dataRanges: dataRanges, base: base, reference: reference, packing: packing) { buffer, count, offset in
            let length = max(0, min(count, size - offset))
            if let from = UnsafeRawPointer(bitPattern: start + UInt(offset)), length > 0 {
                buffer.copyMemory(from: from, byteCount: length)
            }
            return length
        }
    }

    private func cut(name path: String, size: Int, dataRanges: [Range<Int>], base: FrameList?, reference: FrameReference?,
                     packing: Bool,
                     read: @escaping @Sendable (UnsafeMutableRawPointer, _ count: Int, _ offset: Int) throws -> Int) throws -> CutResult {
        guard size <= FrameList.maxTotalSize else {
            throw StasisError(.invalidArgument, "\(path) is \(size) bytes; a frame list holds at most \(FrameList.maxTotalSize)")
        }
        let batches = batches(of: dataRanges, size: size)
        let reference = reference?.clipped(to: size)
        let results = Mutex(Tally())
        let frameSize = self.frameSize
        let store = self.store
        let base = base.flatMap {
            $0.frameSize == frameSize && frameSize > FrameList.pageSize
                ? ChunkedFile(store: store, frames: $0, reference: reference, workers: 1) : nil
        }
        let batchCapacity = max(frameSize, FrameCutter.batchBytes)
        // Pages the base keeps in packs of the store stay there; a version 3 base's own pack is
        // its snapshot's, so its pages are packed again.
        let basePacked = (base?.frames.packedChunks ?? [:]).filter { $0.value.location.pack != FrameList.ownPack }
        do {
            try ParallelWork.run(workers: min(workers, max(batches.count, 1))) { _, work in
                let codec = try Zstd()
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: batchCapacity, alignment: 4096)
                defer { buffer.deallocate() }
                let baseFrame = UnsafeMutableRawBufferPointer.allocate(byteCount: frameSize, alignment: 4096)
                defer { baseFrame.deallocate() }
                let referenceBytes = UnsafeMutableRawBufferPointer.allocate(byteCount: frameSize, alignment: 4096)
                defer { referenceBytes.deallocate() }
                guard let bufferStart = buffer.baseAddress else { return }
                var local = Tally()
                while let b = work.take(below: batches.count) {
                    let batch = batches[b]
                    let offset = batch.lowerBound * frameSize
                    let length = min(batch.count * frameSize, size - offset)
                    let got = try read(bufferStart, length, offset)
                    guard got == length else {
                        throw StasisError(.ioFailure, "\(path) shrank while being cut: \(got) of \(length) bytes at offset \(offset)")
                    }
                    local.bytesRead += length
                    for index in batch {
                        let start = (index - batch.lowerBound) * frameSize
                        let frame = UnsafeRawBufferPointer(rebasing: buffer[start ..< min(start + frameSize, length)])
                        if FileIO.isZero(frame) {
                            local.zeroFrames += 1
                            continue
                        }
                        let prefixBytes = UnsafeMutableRawBufferPointer(rebasing: referenceBytes[0 ..< frame.count])
                        // A reference that cannot be read (truncated, gone) leaves frames plain.
                        let prefix = (try? reference?.read(forFrameAt: index * frameSize, into: prefixBytes)) == true
                            ? UnsafeRawBufferPointer(prefixBytes) : nil
                        let hash = ChunkStore.name(of: frame, prefix: prefix)
                        if let ref = store.stored(hash: hash, rawSize: frame.count) {
                            local.frames.append((index, ref))
                            if prefix != nil { local.deltaChunks.insert(hash) }
                            continue
                        }
                        if let base, let (ref, pages) = try patch(frame, index: index, over: base, scratch: baseFrame, codec: codec,
                                                                   packing: packing, basePacked: basePacked, tally: &local) {
                            local.frames.append((index, ref))
                            local.patches[index] = pages
                            continue
                        }
                        guard let (ref, isNew) = try store.store(frame, codec: codec, hash: hash, prefix: prefix) else { continue }
                        local.frames.append((index, ref))
                        if prefix != nil { local.deltaChunks.insert(hash) }
                        if isNew { local.written[ref.hash] = ref.storedSize }
                    }
                }
                results.withLock { $0.absorb(local) }
            }
        } catch let error as StasisError {
            throw StasisError(error.code, "cannot cut \(path) into frames", cause: error)
        }
        var tally = results.withLock { $0 }
        if !tally.packed.isEmpty { try writePack(&tally) }
        try store.sync()
        let frames = try FrameList(frameSize: frameSize, totalSize: size, frames: tally.frames, patches: tally.patches,
                                   reference: tally.deltaChunks.isEmpty ? nil : reference?.identity, deltaChunks: tally.deltaChunks)
        let holes = frames.frameCount - frames.nonZeroFrames.count - tally.zeroFrames
        let wholeNew = Set(tally.frames.map(\.ref.hash)).intersection(tally.written.keys).count
        return CutResult(
            frames: frames,
            newChunks: tally.written.count,
            newBytes: tally.written.values.reduce(0, +),
            reusedFrames: frames.nonZeroFrames.count - wholeNew - tally.patches.count,
            patchedFrames: tally.patches.count,
            zeroFrames: tally.zeroFrames + holes,
            bytesRead: tally.bytesRead
        )
    }

    /// Pages of a frame at most this many of which may differ from its base frame to be stored
    /// as patches: beyond half a frame, the whole frame compresses better than its pages.
    var maxPatchPages: Int { frameSize / FrameList.pageSize / 2 }

    /// Stores `frame` as the base's chunk for frame `index` plus the pages that differ from it,
    /// or returns nil (no base frame, too many pages differ, or the base chunk cannot be read:
    /// then the frame is stored whole).
    private func patch(_ frame: UnsafeRawBufferPointer, index: Int, over base: ChunkedFile, scratch: UnsafeMutableRawBufferPointer,
                       codec: Zstd, packing: Bool, basePacked: [String: (location: FrameList.PackLocation, storedSize: Int)],
                       tally: inout Tally) throws -> (ChunkRef, [FrameList.PagePatch])? {
        guard let position = base.position(ofFrame: index), let ours = frame.baseAddress, let theirs = scratch.baseAddress,
              let baseRef = try? base.loadChunk(position: position, into: scratch, codec: codec, check: .frameChecksum),
              baseRef.rawSize == frame.count else { return nil }
        var changed: [Int] = []
        for page in 0 ..< (frame.count + FrameList.pageSize - 1) / FrameList.pageSize {
            let range = page * FrameList.pageSize ..< min((page + 1) * FrameList.pageSize, frame.count)
            if memcmp(ours + range.lowerBound, theirs + range.lowerBound, range.count) != 0 {
                changed.append(page)
                if changed.count > maxPatchPages { return nil }
            }
        }
        var pages: [FrameList.PagePatch] = []
        for page in changed {
            let range = page * FrameList.pageSize ..< min((page + 1) * FrameList.pageSize, frame.count)
            // Against the page it replaces: a page that changed in a few words costs those words.
            let old = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(scratch)[range])
            let new = UnsafeRawBufferPointer(rebasing: frame[range])
            let prefix = FileIO.isZero(old) ? nil : old
            if packing {
                if FileIO.isZero(new) {
                    pages.append(FrameList.PagePatch(page: page, chunk: nil))
                    continue
                }
                let hash = ChunkStore.name(of: new, prefix: prefix)
                if let kept = basePacked[hash] {
                    // Unchanged since the base: listed where the base has it.
                    let ref = ChunkRef(hash: hash, rawSize: new.count, storedSize: kept.storedSize)
                    pages.append(FrameList.PagePatch(page: page, chunk: ref, isDelta: prefix != nil, packed: kept.location))
                } else if let known = store.stored(hash: hash, rawSize: new.count) {
                    pages.append(FrameList.PagePatch(page: page, chunk: known, isDelta: prefix != nil))
                } else {
                    // Its pack and offset are known once every worker is done (`writePack`).
                    let bytes = try codec.compress(new, level: store.level, prefix: prefix)
                    tally.packed[hash] = bytes
                    let ref = ChunkRef(hash: hash, rawSize: new.count, storedSize: bytes.count)
                    pages.append(FrameList.PagePatch(page: page, chunk: ref, isDelta: prefix != nil,
                                                     packed: .init(pack: FrameList.ownPack, offset: -1)))
                }
                continue
            }
            let stored = try store.store(new, codec: codec, prefix: prefix)
            if let stored, stored.isNew { tally.written[stored.ref.hash] = stored.ref.storedSize }
            pages.append(FrameList.PagePatch(page: page, chunk: stored?.ref, isDelta: prefix != nil))
        }
        if base.frames.isDelta(at: position) { tally.deltaChunks.insert(baseRef.hash) }
        return (baseRef, pages)
    }

    /// Writes the new packed chunks as one pack of the store (in hash order, so the same cut
    /// gives the same pack), and sets each new patch's pack and offset.
    private func writePack(_ tally: inout Tally) throws {
        var offsets: [String: Int] = [:]
        var bytes: [UInt8] = []
        for hash in tally.packed.keys.sorted() {
            offsets[hash] = bytes.count
            bytes += tally.packed[hash] ?? []
        }
        let name = try store.writePack(bytes)
        for (frame, pages) in tally.patches {
            tally.patches[frame] = pages.map { patch in
                var patch = patch
                if let hash = patch.chunk?.hash, patch.packed?.offset == -1, let offset = offsets[hash] {
                    patch.packed = .init(pack: name, offset: offset)
                }
                return patch
            }
        }
        for (hash, frame) in tally.packed { tally.written[hash] = frame.count }
    }

    /// Frame ranges covering `ranges` (byte ranges with data), merged and split so that each is
    /// at most one read buffer.
    func batches(of ranges: [Range<Int>], size: Int) -> [Range<Int>] {
        let perBatch = max(1, FrameCutter.batchBytes / frameSize)
        var merged: [Range<Int>] = []
        for range in ranges where !range.isEmpty {
            let first = range.lowerBound / frameSize
            let end = (min(range.upperBound, size) + frameSize - 1) / frameSize
            if let last = merged.last, first <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound ..< max(last.upperBound, end)
            } else {
                merged.append(first ..< end)
            }
        }
        var batches: [Range<Int>] = []
        for range in merged {
            var start = range.lowerBound
            while start < range.upperBound {
                let end = min(start + perBatch, range.upperBound)
                batches.append(start ..< end)
                start = end
            }
        }
        return batches
    }

    /// One worker's count, summed into the cut's.
    private struct Tally {
        var frames: [(index: Int, ref: ChunkRef)] = []
        var patches: [Int: [FrameList.PagePatch]] = [:]
        var deltaChunks: Set<String> = []
        /// New page chunks bound for the pack file, by hash.
        var packed: [String: [UInt8]] = [:]
        var written: [String: Int] = [:]
        var zeroFrames = 0
        var bytesRead = 0

        mutating func absorb(_ other: Tally) {
            frames += other.frames
            patches.merge(other.patches) { first, _ in first }
            deltaChunks.formUnion(other.deltaChunks)
            packed.merge(other.packed) { first, _ in first }
            written.merge(other.written) { first, _ in first }
            zeroFrames += other.zeroFrames
            bytesRead += other.bytesRead
        }
    }
}
