import Foundation
import StasisCore
import Synchronization

/// A file kept in a `ChunkStore` as a `FrameList`: written back whole (eager restore), frame by
/// frame (lazy restore), or exported in the zstd seekable format.
public struct ChunkedFile: Sendable {
    /// The store holding the chunks.
    public let store: ChunkStore
    /// The file's frames.
    public let frames: FrameList
    /// Worker threads for `materialize`.
    public let workers: Int
    /// The file delta chunks were compressed against, when the list has any.
    public let reference: FrameReference?
    /// The list's own pack file, for a version 3 list with packed chunks (later lists name packs
    /// of the store).
    public let ownPack: URL?

    /// Non-zero frames one worker takes at a time.
    static let framesPerBatch = 64

    /// Pack files opened for page patches, shared by every worker (a pread needs no lock) and by
    /// copies of this value; at most `OpenFiles.defaultLimit` stay open while unused (a lazily
    /// restored machine keeps this value for its lifetime), the rest close with the last copy.
    private let openPacks = OpenFiles()

    /// The file described by `frames`, its chunks in `store`, its delta chunks against `reference`.
    public init(store: ChunkStore, frames: FrameList, reference: FrameReference? = nil, ownPack: URL? = nil, workers: Int? = nil) {
        self.store = store
        self.frames = frames
        self.reference = reference
        self.ownPack = ownPack
        self.workers = max(1, workers ?? ParallelWork.defaultWorkers())
    }

    /// Writes the whole file to `url` as a sparse file: a temporary file beside it is sized with
    /// ftruncate, only non-zero frames are written (decompressed on several threads, each checked
    /// against its frame checksum: `ChunkCheck.frameChecksum`), then it is fsynced and renamed over `url`. A damaged or missing chunk
    /// fails the whole write, naming the frame and the chunk, and leaves `url` untouched.
    /// `durable: false` skips the fsync, for a file that need not survive a crash (a new
    /// machine's RAM).
    public func materialize(to url: URL, mode: mode_t = 0o600, durable: Bool = true) throws {
        let temporary = FileIO.temporaryPath(beside: url.path)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot create \(temporary)", cause: Errno()) }
        do {
            guard ftruncate(fd, off_t(frames.totalSize)) == 0 else {
                throw StasisError(.ioFailure, "cannot size \(temporary) to \(frames.totalSize) bytes", cause: Errno())
            }
            try write(positions: Array(frames.nonZeroFrames.indices), to: fd, name: url.path)
            guard !durable || fsync(fd) == 0 else { throw StasisError(.ioFailure, "cannot fsync \(temporary)", cause: Errno()) }
            close(fd)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        try AtomicFile.rename(URL(fileURLWithPath: temporary), over: url)
    }

    /// Writes frames `indices` into the existing file at `url` (for a lazy restore that fills a
    /// file as the guest touches it). Zero frames are skipped: the file is expected to be a fresh
    /// sparse file of the list's size, where they already read as zeros. Not fsynced.
    public func materialize(frames indices: some Sequence<Int>, into url: URL) throws {
        var positions: [Int] = []
        for index in indices {
            guard index >= 0, index < frames.frameCount else {
                throw StasisError(.invalidArgument, "frame \(index) is outside 0..<\(frames.frameCount)")
            }
            if let position = position(ofFrame: index) { positions.append(position) }
        }
        let fd = open(url.path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open \(url.path)", cause: Errno()) }
        defer { close(fd) }
        let size = try FileIO.size(fd, path: url.path)
        guard size == frames.totalSize else {
            throw StasisError(.invalidArgument, "\(url.path) is \(size) bytes; the frame list is \(frames.totalSize)")
        }
        try write(positions: positions, to: fd, name: url.path)
    }

    /// The uncompressed bytes of frame `index`, checked as `check` says; zeros for a zero frame.
    public func readFrame(_ index: Int, codec: Zstd? = nil, check: ChunkCheck = .frameChecksum) throws -> [UInt8] {
        guard index >= 0, index < frames.frameCount else {
            throw StasisError(.invalidArgument, "frame \(index) is outside 0..<\(frames.frameCount)")
        }
        guard let position = position(ofFrame: index) else {
            return [UInt8](repeating: 0, count: frames.rawSize(ofFrame: index))
        }
        let zstd = try codec ?? Zstd()
        let raw = frames.rawSize(ofFrame: index)
        return try [UInt8](unsafeUninitializedCapacity: raw) { buffer, count in
            count = 0
            try load(position: position, into: UnsafeMutableRawBufferPointer(buffer), codec: zstd, check: check)
            count = raw
        }
    }

    /// Decompresses the `position`-th non-zero frame into the start of `buffer`: its chunk, then
    /// its page patches over it, each checked as `check` says. Returns the frame's length; an
    /// error names the frame and the chunk that failed.
    @discardableResult
    func load(position: Int, into buffer: UnsafeMutableRawBufferPointer, codec: Zstd, packs: WorkerPacks? = nil,
              check: ChunkCheck) throws -> Int {
        let index = frames.nonZeroFrames[position]
        let ref = try loadChunk(position: position, into: buffer, codec: codec, check: check)
        for patch in frames.patches(at: position) {
            let offset = patch.page * FrameList.pageSize
            let length = FrameList.rawSize(ofPage: patch.page, frameRawSize: ref.rawSize)
            let page = UnsafeMutableRawBufferPointer(rebasing: buffer[offset ..< offset + length])
            guard let chunk = patch.chunk else {
                page.initializeMemory(as: UInt8.self, repeating: 0)
                continue
            }
            func read(packedAt: (Int32, String, Int)?) throws {
                if patch.isDelta {
                    // Compressed against the page it replaces, which the frame's chunk just wrote.
                    let beneath = [UInt8](UnsafeRawBufferPointer(page))
                    _ = try beneath.withUnsafeBytes {
                        try store.load(chunk, into: page, codec: codec, prefix: $0, packedAt: packedAt, check: check)
                    }
                } else {
                    try store.load(chunk, into: page, codec: codec, packedAt: packedAt, check: check)
                }
            }
            do {
                if let location = patch.packed {
                    try withPack(location.pack, packs: packs) { try read(packedAt: ($0, $1, location.offset)) }
                } else {
                    try read(packedAt: nil)
                }
            } catch {
                throw ChunkedFile.frameError(index, chunk, error)
            }
        }
        return ref.rawSize
    }

    /// Runs `body` with a descriptor for pack `name` and its path: the worker's own, or one of
    /// the shared files, kept open until `body` returns.
    private func withPack<R>(_ name: String, packs: WorkerPacks?, _ body: (_ descriptor: Int32, _ path: String) throws -> R) throws -> R {
        if let packs {
            let pack = try packs.file(name)
            return try body(pack.descriptor, pack.path)
        }
        let path = try packURL(name).path
        return try openPacks.withDescriptor(path) { try body($0, path) }
    }

    /// A worker's own lookup of the packs it uses, in front of the shared files; the packs it
    /// opened stay open until it goes away.
    func workerPacks() -> WorkerPacks { WorkerPacks(files: openPacks) { try packURL($0).path } }

    /// Where pack `name` is: the store's pack, or the list's own file.
    private func packURL(_ name: String) throws -> URL {
        guard name == FrameList.ownPack else { return store.packURL(name) }
        guard let ownPack else { throw StasisError(.notFound, "it is in the list's own pack file, and none was given") }
        return ownPack
    }

    /// Decompresses only the `position`-th non-zero frame's chunk (no patches): a delta chunk
    /// against the reference's bytes for that frame. Returns the chunk.
    @discardableResult
    func loadChunk(position: Int, into buffer: UnsafeMutableRawBufferPointer, codec: Zstd, check: ChunkCheck) throws -> ChunkRef {
        let index = frames.nonZeroFrames[position]
        let ref = frames.ref(at: position)
        do {
            if frames.isDelta(at: position) {
                let prefix = UnsafeMutableRawBufferPointer.allocate(byteCount: ref.rawSize, alignment: 4096)
                defer { prefix.deallocate() }
                try readReference(forFrame: index, into: prefix)
                try store.load(ref, into: buffer, codec: codec, prefix: UnsafeRawBufferPointer(prefix), check: check)
            } else {
                try store.load(ref, into: buffer, codec: codec, check: check)
            }
        } catch {
            throw ChunkedFile.frameError(index, ref, error)
        }
        return ref
    }

    /// The reference's bytes for frame `index`, from the file this list was cut against.
    private func readReference(forFrame index: Int, into prefix: UnsafeMutableRawBufferPointer) throws {
        guard let expected = frames.reference else {
            throw StasisError(.corrupted, "frame \(index) is a delta but its list names no reference")
        }
        guard let reference else {
            throw StasisError(.notFound, "frame \(index) is a delta against a file with digest \(expected.digest), and none is at hand")
        }
        guard reference.identity == expected else {
            throw StasisError(.notFound, "frame \(index) is a delta against a file with digest \(expected.digest); \(reference.url.path) is \(reference.identity.digest) or laid out differently")
        }
        guard try reference.read(forFrameAt: index * frames.frameSize, into: prefix) else {
            throw StasisError(.corrupted, "frame \(index) is a delta but lies outside its reference")
        }
    }

    /// Reads every chunk of the file and checks it against its name, without writing anything.
    public func verify() throws {
        let positions = frames.nonZeroFrames.count
        let batches = (positions + ChunkedFile.framesPerBatch - 1) / ChunkedFile.framesPerBatch
        let frames = self.frames
        let file = self
        try ParallelWork.run(workers: min(workers, max(batches, 1))) { _, work in
            let codec = try Zstd()
            let packs = file.workerPacks()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: frames.frameSize, alignment: 4096)
            defer { buffer.deallocate() }
            while let batch = work.take(below: batches) {
                let start = batch * ChunkedFile.framesPerBatch
                for position in start ..< min(start + ChunkedFile.framesPerBatch, positions) {
                    try file.load(position: position, into: buffer, codec: codec, packs: packs, check: .name)
                }
            }
        }
    }

    /// The position of frame `index` among the non-zero frames, or nil for a zero frame.
    func position(ofFrame index: Int) -> Int? {
        let list = frames.nonZeroFrames
        var low = 0
        var high = list.count
        while low < high {
            let middle = (low + high) / 2
            if list[middle] < index { low = middle + 1 } else { high = middle }
        }
        return low < list.count && list[low] == index ? low : nil
    }

    /// Decompresses the non-zero frames at `positions` and pwrites each at its offset.
    private func write(positions: [Int], to fd: Int32, name: String) throws {
        let batches = (positions.count + ChunkedFile.framesPerBatch - 1) / ChunkedFile.framesPerBatch
        let frames = self.frames
        let file = self
        try ParallelWork.run(workers: min(workers, max(batches, 1))) { _, work in
            let codec = try Zstd()
            let packs = file.workerPacks()
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: frames.frameSize, alignment: 4096)
            defer { buffer.deallocate() }
            while let batch = work.take(below: batches) {
                let start = batch * ChunkedFile.framesPerBatch
                for position in positions[start ..< min(start + ChunkedFile.framesPerBatch, positions.count)] {
                    let index = frames.nonZeroFrames[position]
                    let length = try file.load(position: position, into: buffer, codec: codec, packs: packs, check: .frameChecksum)
                    do {
                        try FileIO.write(fd, UnsafeRawBufferPointer(rebasing: buffer[0 ..< length]), at: index * frames.frameSize)
                    } catch {
                        throw StasisError(.ioFailure, "cannot write frame \(index) of \(name)", cause: error)
                    }
                }
            }
        }
    }

    private func frameError(_ index: Int, _ ref: ChunkRef, _ error: any Error) -> StasisError {
        ChunkedFile.frameError(index, ref, error)
    }

    /// An error naming the frame and its chunk, keeping the cause's code (`.corrupted`, `.notFound`…).
    static func frameError(_ index: Int, _ ref: ChunkRef, _ error: any Error, file: String? = nil) -> StasisError {
        let code = (error as? StasisError)?.code ?? .ioFailure
        let place = file.map { " of \($0)" } ?? ""
        return StasisError(code, "frame \(index) (chunk \(ref.hash))\(place)", cause: error)
    }
}

/// Files opened for reading on first use and shared: a file stays open while anyone uses it
/// (`acquire` to `release`, or `withDescriptor`) and after, until more than `limit` are open,
/// when the least recently used unused ones close; the rest close when this object goes away.
/// A lazily restored machine reads page patches from hundreds of packs over its lifetime.
final class OpenFiles: Sendable {
    /// Files kept open while unused.
    static let defaultLimit = 64

    private struct File {
        var descriptor: Int32
        /// Holders between `acquire` and `release`: never closed while there are any.
        var users: Int
        /// When it was last acquired, by `State.clock`.
        var lastUse: UInt64
    }

    private struct State {
        var files: [String: File] = [:]
        /// Files open with no user: the ones `trim` may close.
        var unused = 0
        var clock: UInt64 = 0

        /// Takes `path` for one more user, if it is open.
        mutating func use(_ path: String) -> Int32? {
            guard var file = files[path] else { return nil }
            clock += 1
            if file.users == 0 { unused -= 1 }
            file.users += 1
            file.lastUse = clock
            files[path] = file
            return file.descriptor
        }

        /// Adds `path`, just opened as `descriptor`, with one user.
        mutating func add(_ path: String, _ descriptor: Int32) {
            clock += 1
            files[path] = File(descriptor: descriptor, users: 1, lastUse: clock)
        }

        /// Ends one use of `path`.
        mutating func release(_ path: String) {
            guard var file = files[path], file.users > 0 else { return }
            file.users -= 1
            if file.users == 0 { unused += 1 }
            files[path] = file
        }

        /// Removes the least recently used unused files until at most `limit` are open (or none
        /// is unused); returns their descriptors, to close.
        mutating func trim(to limit: Int) -> [Int32] {
            let excess = min(files.count - limit, unused)
            guard excess > 0 else { return [] }
            let oldest = files.filter { $0.value.users == 0 }.sorted { $0.value.lastUse < $1.value.lastUse }.prefix(excess)
            for (path, _) in oldest { files[path] = nil }
            unused -= oldest.count
            return oldest.map(\.value.descriptor)
        }
    }

    private let state = Mutex(State())
    /// How many files stay open once unused.
    let limit: Int

    init(limit: Int = OpenFiles.defaultLimit) {
        self.limit = max(limit, 0)
    }

    /// A descriptor for `path`, opened the first time it is asked for (outside the lock, so
    /// workers opening different files do not wait for each other); it stays open until the
    /// matching `release`.
    func acquire(_ path: String) throws -> Int32 {
        if let fd = state.withLock({ $0.use(path) }) { return fd }
        let fd = try FileIO.openForReading(path)
        let (descriptor, closing) = state.withLock { state -> (Int32, [Int32]) in
            if let first = state.use(path) { return (first, [fd]) }
            state.add(path, fd)
            return (fd, state.trim(to: limit))
        }
        for unused in closing { close(unused) }
        return descriptor
    }

    /// Ends one use of each of `paths`, begun by `acquire`.
    func release(_ paths: some Sequence<String>) {
        let closing = state.withLock { state -> [Int32] in
            for path in paths { state.release(path) }
            return state.trim(to: limit)
        }
        for unused in closing { close(unused) }
    }

    /// Runs `body` with a descriptor for `path`, open until `body` returns.
    func withDescriptor<R>(_ path: String, _ body: (Int32) throws -> R) throws -> R {
        let fd = try acquire(path)
        defer { release(CollectionOfOne(path)) }
        return try body(fd)
    }

    /// How many files are open, in use or not.
    var count: Int { state.withLock { $0.files.count } }

    deinit {
        state.withLock { state in for file in state.files.values { close(file.descriptor) } }
    }
}

/// One worker's packs, by name: after its first use of a pack, a lookup takes no lock and builds
/// no path (a restore late in a session reads ~1,750 page patches from ~550 packs). The worker
/// holds each of them in the shared `OpenFiles` until it goes away.
final class WorkerPacks {
    private var known: [String: (descriptor: Int32, path: String)] = [:]
    private let files: OpenFiles
    private let path: (String) throws -> String

    init(files: OpenFiles, path: @escaping (String) throws -> String) {
        self.files = files
        self.path = path
    }

    func file(_ name: String) throws -> (descriptor: Int32, path: String) {
        if let pack = known[name] { return pack }
        let path = try path(name)
        let pack = (descriptor: try files.acquire(path), path: path)
        known[name] = pack
        return pack
    }

    deinit {
        files.release(known.values.map(\.path))
    }
}
