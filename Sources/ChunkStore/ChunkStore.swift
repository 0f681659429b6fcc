import Crypto
import Foundation
import StasisCore
import Synchronization

/// A content-addressed store of compressed frames: `<root>/chunks/<first 2 hex>/<sha256 hex>`,
/// each file one plain zstd frame (so `zstd -d` reads it), named by the SHA-256 of its
/// uncompressed bytes. A chunk is written once; all-zero frames are never stored.
///
/// Small chunks (page patches of a few hundred bytes) are kept in packs instead,
/// `<root>/chunks/packs/<sha256 hex of the pack>`: one file of concatenated zstd frames per cut,
/// found by the frame lists that name the pack and an offset in it. A pack is shared by every
/// later list that still uses one of its chunks, and removed by gc when no list names it.
///
/// A Sendable final class rather than an actor: the frame cutter calls `put` from many threads at
/// once, and each call is blocking work (hash, compress, write, fsync) that an actor would funnel
/// through one executor while making every caller async. Each chunk write is made atomic by the
/// file system (rename of a complete, fsynced temporary file), so the only shared mutable state is
/// the set of folders awaiting an fsync, behind a Mutex.
public final class ChunkStore: Sendable {
    /// The root the store lives under (`$STASIS_HOME`, or a test folder).
    public let root: URL
    /// The `chunks` folder.
    public let directory: URL
    /// The zstd level new chunks are compressed with.
    public let level: Int

    private let chunksPath: String
    private let packsPath: String
    private let folders = Mutex(Folders())

    private struct Folders {
        /// Prefix folders known to exist, so `put` does not mkdir on every chunk.
        var existing: Set<String> = []
        /// Folders whose entries changed since the last `sync()`.
        var unsynced: Set<String> = []
    }

    /// A store under `root/chunks`, compressing new chunks at `level`; the folder is created on
    /// the first `put`.
    public init(root: URL, level: Int = Zstd.defaultLevel) throws {
        guard Zstd.isValidLevel(level) else { throw StasisError(.invalidArgument, "zstd level \(level) is not valid") }
        self.root = root.standardizedFileURL
        self.directory = self.root.appendingPathComponent("chunks")
        self.chunksPath = directory.path
        self.packsPath = directory.appendingPathComponent("packs").path
        self.level = level
    }

    // MARK: Writing

    /// Stores one frame and returns its reference, or nil for an all-zero frame. A chunk that is
    /// already stored is not written again. The chunk file is fsynced before it is renamed into
    /// place; its folder's entry becomes durable at the next `sync()`. `level` overrides the
    /// store's for this chunk.
    public func put(_ bytes: some ContiguousBytes, codec: Zstd? = nil, level: Int? = nil) throws -> ChunkRef? {
        let zstd = try codec ?? Zstd()
        return try bytes.withUnsafeBytes { try store($0, codec: zstd, level: level)?.ref }
    }

    /// The chunk `hash` of `rawSize` bytes, if it is stored. Its folder entries are synced at
    /// the next `sync()` all the same: another process may have written it and not synced yet,
    /// and a manifest about to list it must not outlive it.
    func stored(hash: String, rawSize: Int) -> ChunkRef? {
        var st = stat()
        // A zero-length file is never a chunk (a zstd frame is at least 9 bytes): it can only be
        // left by a crash on a file system that exposes unwritten files, so it is replaced.
        guard stat(path(of: hash), &st) == 0, st.st_size > 0 else { return nil }
        syncFound(in: chunksPath + "/" + hash.prefix(2))
        return ChunkRef(hash: hash, rawSize: rawSize, storedSize: Int(st.st_size))
    }

    /// `put` that also says whether this call wrote the chunk (false: it was already stored);
    /// `hash` saves hashing again when the caller already has it.
    ///
    /// With `prefix`, the chunk is a delta: compressed against those bytes and named by
    /// `deltaHash(prefix:raw:)`, so reading it needs the same prefix and checks both.
    func store(_ raw: UnsafeRawBufferPointer, codec: Zstd, hash known: String? = nil,
               prefix: UnsafeRawBufferPointer? = nil, level: Int? = nil) throws -> (ref: ChunkRef, isNew: Bool)? {
        if FileIO.isZero(raw) { return nil }
        let hash = known ?? ChunkStore.name(of: raw, prefix: prefix)
        if let ref = stored(hash: hash, rawSize: raw.count) { return (ref, false) }
        let folder = chunksPath + "/" + hash.prefix(2)
        let path = folder + "/" + hash
        let frame = try codec.compress(raw, level: level ?? self.level, prefix: prefix)
        try makeFolder(folder)
        try frame.withUnsafeBytes { try writeDurably($0, to: path) }
        folders.withLock { _ = $0.unsynced.insert(folder) }
        return (ChunkRef(hash: hash, rawSize: raw.count, storedSize: frame.count), true)
    }

    /// Writes `bytes` (concatenated chunks) as a pack named by their SHA-256 and returns the name;
    /// a pack already stored is not written again. Durable at the next `sync()`, like a chunk.
    public func writePack(_ bytes: [UInt8]) throws -> String {
        let name = bytes.withUnsafeBytes { ChunkStore.hash($0) }
        let path = packsPath + "/" + name
        var st = stat()
        if stat(path, &st) == 0, st.st_size == bytes.count {
            syncFound(in: packsPath)
            return name
        }
        try makeFolder(packsPath)
        try bytes.withUnsafeBytes { try writeDurably($0, to: path) }
        folders.withLock { _ = $0.unsynced.insert(packsPath) }
        return name
    }

    /// Marks `folder` (a prefix folder or `packs`) for the next `sync()` because a file found
    /// already stored in it may be another process's, whose entry is not synced yet; with it
    /// `chunks`, which holds the folder's own entry.
    private func syncFound(in folder: String) {
        folders.withLock { state in
            if state.unsynced.insert(folder).inserted { state.unsynced.insert(chunksPath) }
        }
    }

    /// fsyncs every folder whose entries changed since the last call, once each: a snapshot of
    /// thousands of chunks costs at most 257 folder fsyncs, not one per chunk.
    public func sync() throws {
        let pending = folders.withLock { state -> Set<String> in
            defer { state.unsynced = [] }
            return state.unsynced
        }
        // Prefix folders first, then `chunks` itself, whose new entries are those folders.
        for folder in pending.sorted(by: { $0.count > $1.count }) {
            do {
                try AtomicFile.syncDirectory(URL(fileURLWithPath: folder))
            } catch {
                folders.withLock { $0.unsynced.formUnion(pending) }
                throw error
            }
        }
    }

    private func makeFolder(_ folder: String) throws {
        if folders.withLock({ $0.existing.contains(folder) }) { return }
        for path in [chunksPath, folder] {
            if mkdir(path, 0o755) == 0 {
                continue
            } else if errno == ENOENT, path == chunksPath {
                // The root itself is missing (a fresh home): create it like `StasisHome.prepare`.
                do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
                    throw StasisError(.ioFailure, "cannot create \(path)", cause: error)
                }
            } else if errno != EEXIST {
                throw StasisError(.ioFailure, "cannot create \(path)", cause: Errno())
            }
        }
        folders.withLock { state in
            state.existing.insert(folder)
            // A folder's entry lives in its parent. One found already there may be another
            // process's, not yet synced: its parent is synced all the same (once per store).
            for path in [chunksPath, folder] {
                state.unsynced.insert(String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)]))
            }
        }
    }

    private func writeDurably(_ bytes: UnsafeRawBufferPointer, to path: String) throws {
        let temporary = FileIO.temporaryPath(beside: path)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot create \(temporary)", cause: Errno()) }
        do {
            try FileIO.append(fd, bytes)
            guard fsync(fd) == 0 else { throw StasisError(.ioFailure, "cannot fsync \(temporary)", cause: Errno()) }
            close(fd)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        // Two writers of the same chunk both rename complete, identical files: either one wins.
        guard rename(temporary, path) == 0 else {
            let error = Errno()
            unlink(temporary)
            throw StasisError(.ioFailure, "cannot rename \(temporary) to \(path)", cause: error)
        }
    }

    // MARK: Reading

    /// The uncompressed bytes of a chunk, checked against its hash. A missing chunk is
    /// `.notFound`; one that does not decompress or does not match its hash is `.corrupted`.
    public func get(_ ref: ChunkRef, codec: Zstd? = nil) throws -> [UInt8] {
        let zstd = try codec ?? Zstd()
        try checkReference(ref)
        return try [UInt8](unsafeUninitializedCapacity: ref.rawSize) { buffer, count in
            count = 0
            _ = try load(ref, into: UnsafeMutableRawBufferPointer(buffer), codec: zstd)
            count = ref.rawSize
        }
    }

    /// Decompresses chunk `ref` into the first `ref.rawSize` bytes of `buffer`, checks it as
    /// `check` says, and returns the stored frame (for an export that copies it). A delta chunk needs its `prefix`.
    /// `packedAt`: the chunk is not a file of the store but `ref.storedSize` bytes at that
    /// offset of a pack file the caller has open.
    @discardableResult
    func load(_ ref: ChunkRef, into buffer: UnsafeMutableRawBufferPointer, codec: Zstd,
              prefix: UnsafeRawBufferPointer? = nil, packedAt: (file: Int32, path: String, offset: Int)? = nil,
              check: ChunkCheck = .name) throws -> [UInt8] {
        try checkReference(ref)
        let path = packedAt?.path ?? self.path(of: ref.hash)
        let fd = try packedAt?.file ?? FileIO.openForReading(path)
        defer { if packedAt == nil { close(fd) } }
        let size = packedAt == nil ? try FileIO.size(fd, path: path) : ref.storedSize
        guard size > 0, size <= Zstd.compressBound(ref.rawSize) else {
            throw StasisError(.corrupted, "chunk \(ref.hash) is damaged: \(size) bytes stored for \(ref.rawSize)")
        }
        let frame = try FileIO.readExactly(fd, count: size, at: packedAt?.offset ?? 0)
        do {
            try frame.withUnsafeBytes { try codec.decompress($0, expectedSize: ref.rawSize, into: buffer, prefix: prefix) }
        } catch {
            throw StasisError(.corrupted, "chunk \(ref.hash) is damaged\(prefix == nil ? "" : " or its reference changed")", cause: error)
        }
        if check == .frameChecksum, frame.withUnsafeBytes(Zstd.hasContentChecksum) { return frame }
        let raw = UnsafeRawBufferPointer(rebasing: buffer[0 ..< ref.rawSize])
        guard ChunkStore.name(of: raw, prefix: prefix) == ref.hash else {
            throw StasisError(.corrupted, prefix == nil ? "chunk \(ref.hash) is damaged: its content does not match its hash"
                                                         : "chunk \(ref.hash) does not match its hash: it is damaged or its reference changed")
        }
        return frame
    }

    /// The SHA-256 of `bytes` in hex: a chunk's name.
    static func hash(_ bytes: UnsafeRawBufferPointer) -> String {
        var hasher = SHA256()
        hasher.update(bufferPointer: bytes)
        return Hex.encode(hasher.finalize())
    }

    /// The name of a chunk holding `raw`: its SHA-256, or for a delta against `prefix`, `deltaHash`.
    static func name(of raw: UnsafeRawBufferPointer, prefix: UnsafeRawBufferPointer?) -> String {
        prefix.map { deltaHash(prefix: $0, raw: raw) } ?? hash(raw)
    }

    /// A delta chunk's name: the SHA-256 of a domain tag, the prefix and the raw bytes, so it
    /// never equals a plain chunk's and checks both what was compressed and what against.
    static func deltaHash(prefix: UnsafeRawBufferPointer, raw: UnsafeRawBufferPointer) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("stasis.delta.1\0".utf8))
        var length = UInt64(prefix.count).littleEndian
        withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
        hasher.update(bufferPointer: prefix)
        hasher.update(bufferPointer: raw)
        return Hex.encode(hasher.finalize())
    }

    private func checkReference(_ ref: ChunkRef) throws {
        guard Hex.isDigest(ref.hash) else {
            throw StasisError(.invalidArgument, "'\(ref.hash.prefix(80))' is not a chunk hash (64 lowercase hex digits)")
        }
        guard ref.rawSize > 0, ref.rawSize <= Zstd.defaultMaxContentSize else {
            throw StasisError(.invalidArgument, "chunk \(ref.hash) cannot hold \(ref.rawSize) bytes")
        }
    }

    // MARK: Inventory

    /// Where chunk `hash` is (or would be) stored.
    public func path(of hash: String) -> String { chunksPath + "/" + hash.prefix(2) + "/" + hash }

    /// Where pack `name` is (or would be) stored.
    public func packURL(_ name: String) -> URL { URL(fileURLWithPath: packsPath + "/" + name) }

    /// Every stored pack's name and size, for garbage collection and `stasis df`.
    public func allPacks() throws -> [(name: String, size: Int)] {
        guard FileManager.default.fileExists(atPath: packsPath) else { return [] }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: packsPath) } catch {
            throw StasisError(.ioFailure, "cannot list \(packsPath)", cause: error)
        }
        return names.filter(Hex.isDigest).compactMap { name in
            var st = stat()
            return stat(packsPath + "/" + name, &st) == 0 ? (name, Int(st.st_size)) : nil
        }
    }

    /// Deletes pack `name`; returns false if it was not stored. The caller (gc) must know that
    /// no frame list names it.
    @discardableResult
    public func removePack(_ name: String) throws -> Bool {
        guard Hex.isDigest(name) else { throw StasisError(.invalidArgument, "'\(name.prefix(80))' is not a pack name") }
        guard unlink(packsPath + "/" + name) == 0 else {
            if errno == ENOENT { return false }
            throw StasisError(.ioFailure, "cannot remove pack \(name)", cause: Errno())
        }
        folders.withLock { _ = $0.unsynced.insert(packsPath) }
        return true
    }

    /// Whether chunk `hash` is stored; false for anything that is not a chunk hash.
    public func contains(_ hash: String) -> Bool {
        guard Hex.isDigest(hash) else { return false }
        var st = stat()
        return stat(path(of: hash), &st) == 0 && st.st_size > 0
    }

    /// Every stored chunk's hash, for garbage collection. Temporary files are not chunks.
    public func allHashes() throws -> Set<String> {
        var hashes: Set<String> = []
        try forEachChunk { hash, _ in hashes.insert(hash) }
        return hashes
    }

    /// Every stored chunk's hash and stored size.
    public func allChunks() throws -> [(hash: String, size: Int)] {
        var chunks: [(hash: String, size: Int)] = []
        try forEachChunk { hash, size in chunks.append((hash, size)) }
        return chunks
    }

    /// The total size of every stored chunk file.
    public func storedBytes() throws -> Int {
        var total = 0
        try forEachChunk { _, size in total += size }
        return total
    }

    /// Deletes temporary files that writers killed mid-write left in the prefix folders; returns
    /// how many. Only safe while no writer runs (gc holds the writers' lock exclusively).
    @discardableResult
    public func removeTemporaryFiles() throws -> Int {
        let manager = FileManager.default
        guard manager.fileExists(atPath: chunksPath) else { return 0 }
        var removed = 0
        let prefixes = ((try? manager.contentsOfDirectory(atPath: chunksPath)) ?? []).filter { $0.utf8.count == 2 }
        for folder in prefixes.map({ chunksPath + "/" + $0 }) + [packsPath] {
            for name in (try? manager.contentsOfDirectory(atPath: folder)) ?? [] where name.hasPrefix(".") && name.contains(".tmp-") {
                if unlink(folder + "/" + name) == 0 { removed += 1 }
            }
        }
        return removed
    }

    /// Deletes chunk `hash`; returns false if it was not stored. The caller (gc) must know that
    /// no snapshot refers to it.
    @discardableResult
    public func remove(_ hash: String) throws -> Bool {
        guard Hex.isDigest(hash) else { throw StasisError(.invalidArgument, "'\(hash.prefix(80))' is not a chunk hash") }
        let path = self.path(of: hash)
        guard unlink(path) == 0 else {
            if errno == ENOENT { return false }
            throw StasisError(.ioFailure, "cannot remove \(path)", cause: Errno())
        }
        let folder = chunksPath + "/" + hash.prefix(2)
        folders.withLock { _ = $0.unsynced.insert(folder) }
        return true
    }

    private func forEachChunk(_ body: (String, Int) -> Void) throws {
        let manager = FileManager.default
        guard manager.fileExists(atPath: chunksPath) else { return }
        let prefixes: [String]
        do { prefixes = try manager.contentsOfDirectory(atPath: chunksPath) } catch {
            throw StasisError(.ioFailure, "cannot list \(chunksPath)", cause: error)
        }
        for prefix in prefixes where prefix.utf8.count == 2 {
            let folder = chunksPath + "/" + prefix
            let names: [String]
            do { names = try manager.contentsOfDirectory(atPath: folder) } catch {
                throw StasisError(.ioFailure, "cannot list \(folder)", cause: error)
            }
            for name in names where Hex.isDigest(name) && name.hasPrefix(prefix) {
                var st = stat()
                guard stat(folder + "/" + name, &st) == 0, st.st_size > 0 else { continue }
                body(name, Int(st.st_size))
            }
        }
    }
}
