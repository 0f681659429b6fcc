import ChunkStore
import Foundation
import Machines
import StasisCore

/// The snapshots under `$STASIS_HOME/snapshots`. A snapshot is built in a hidden staging folder
/// (held with a lock by the process building it), its manifest written last, and the folder
/// renamed into place: it exists whole or not at all.
public struct SnapshotStore: Sendable {
    public let home: StasisHome

    public init(home: StasisHome) { self.home = home }

    /// The folder of snapshot `id`.
    public func directory(_ id: String) -> URL { home.snapshots.appendingPathComponent(id) }

    /// Bytes per memory frame. 64 KiB: DESIGN.md's measurements put it within 4 % of whole-file
    /// zstd on size while keeping one file per frame affordable; 4 KiB frames win small deltas
    /// but cost a file per page.
    public static let memoryFrameSize = 64 << 10

    /// The chunk store every snapshot's RAM frames live in: `$STASIS_HOME/chunks`.
    public func chunkStore() throws -> ChunkStore { try ChunkStore(root: home.root) }

    /// Held shared by everyone making a reference gc must see (chunks a manifest will list, from
    /// the first chunk to the commit; forks' records naming a RAM cache), and exclusive by gc, so
    /// gc never takes for unused what is about to be used.
    public var chunkWritersLock: URL { home.root.appendingPathComponent("chunks.lock") }

    /// The snapshot disks from `diskBase` down, each with its manifest, and the first layer below
    /// them that is no snapshot's (the image's rootfs).
    public func diskLayers(onto diskBase: String) -> (layers: [(path: String, manifest: SnapshotManifest)], bottom: String) {
        var layers: [(path: String, manifest: SnapshotManifest)] = []
        var base = diskBase
        while layers.count < 10_000, base.hasSuffix("/disk.qcow2"),
              let manifest = try? manifest(URL(fileURLWithPath: base).deletingLastPathComponent().lastPathComponent, frames: false) {
            layers.append((base, manifest))
            base = manifest.diskBase
        }
        return (layers, base)
    }

    /// A snapshot's RAM as a chunked file, with the reference its kernel frames were stored
    /// against (the store's own link to that vmlinux, by digest).
    func memoryFile(_ manifest: SnapshotManifest, frames: FrameList, store: ChunkStore) -> ChunkedFile {
        ChunkedFile(store: store, frames: frames, reference: frames.reference.map(reference(for:)),
                    ownPack: frames.packs == [FrameList.ownPack] ? memoryPack(manifest.id) : nil)
    }

    /// A snapshot's RAM as a chunked file, read a frame at a time by a lazy restore.
    public func chunkedMemory(_ manifest: SnapshotManifest) throws -> ChunkedFile {
        guard let frames = manifest.memoryFrames else {
            throw StasisError(.invalidArgument, "snapshot \(manifest.id) keeps its RAM outside the chunk store (an older snapshot, or one of a fork): restore it without --lazy")
        }
        return memoryFile(manifest, frames: frames, store: try chunkStore())
    }

    /// The file a snapshot's RAM page patches were packed in before packs moved to the chunk
    /// store (a version 3 `FrameList`'s own pack).
    public func memoryPack(_ id: String) -> URL { directory(id).appendingPathComponent(Self.memoryPackName) }

    /// The pack file's name in a snapshot folder.
    public static let memoryPackName = "pages.pack"

    /// The guest kernel `version` as a frame reference, its bytes linked into the store's
    /// `references/` first; nil when the kernel is not installed or cannot serve as one.
    public func kernelReference(_ version: String) -> FrameReference? {
        KernelReference.load(home: home, version: version)
    }

    /// The file a frame list's delta chunks need: `references/<hex digest>`.
    func reference(for identity: FrameReference.Identity) -> FrameReference {
        FrameReference(url: KernelReference.storedPath(home: home, digest: identity.digest), digest: identity.digest,
                       segments: identity.segments)
    }

    /// Fails, naming what to do, when the reference a snapshot's RAM needs is missing; relinks
    /// it from the installed kernel of the snapshot's version when that is the same file.
    public func checkReference(_ manifest: SnapshotManifest, _ identity: FrameReference.Identity) throws {
        let path = KernelReference.storedPath(home: home, digest: identity.digest)
        if FileManager.default.fileExists(atPath: path.path) { return }
        if let installed = kernelReference(manifest.kernel), installed.identity.digest == identity.digest,
           FileManager.default.fileExists(atPath: path.path) { return }
        throw StasisError(.notFound, "snapshot \(manifest.id) cannot be restored: its memory is stored against guest kernel \(manifest.kernel) (vmlinux \(identity.digest)), which is neither in \(home.references.path) nor installed with those bytes; export it from a host that has it and import it here (import stores it against this host's kernel)")
    }

    /// The RAM file that forks of snapshot `id` map: materialized from its frames on first use.
    public func memoryCache(_ id: String) -> URL { directory(id).appendingPathComponent("memory.cache") }

    /// A new staging folder and the lock that marks it as being built.
    func stage() throws -> (id: String, directory: URL, lock: FileLock) {
        try home.prepare()
        sweepAbandonedStaging()
        let id = (0 ..< 6).map { _ in String(format: "%02x", UInt8.random(in: 0 ... 255)) }.joined()
        // Lock first, under a name the sweep ignores, then show it as staging: a sweep must never
        // see a staging folder whose lock is not held yet.
        let fresh = home.snapshots.appendingPathComponent(".new-\(id)")
        try FileManager.default.createDirectory(at: fresh, withIntermediateDirectories: true)
        let lock = try FileLock.acquire(fresh.appendingPathComponent(".lock"))
        let dir = home.snapshots.appendingPathComponent(".staging-\(id)")
        try AtomicFile.rename(fresh, over: dir)
        return (id, dir, lock)
    }

    /// Makes a staged snapshot real: fsync every part, write the manifest, rename the folder.
    /// Returns the manifest as written (with `memoryFramesFile`).
    @discardableResult
    func commit(_ manifest: SnapshotManifest, staged: URL, parent: (manifest: SnapshotManifest, base: BaseList?)? = nil) throws -> SnapshotManifest {
        for part in manifest.parts { try AtomicFile.syncFile(staged.appendingPathComponent(part.file)) }
        let written = try writeManifest(manifest, in: staged, parent: parent)
        try AtomicFile.rename(staged, over: directory(manifest.id))
        try? FileManager.default.removeItem(at: directory(manifest.id).appendingPathComponent(".lock"))
        return written
    }

    /// Deletes staging folders whose builder died (nobody holds their lock).
    func sweepAbandonedStaging() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: home.snapshots.path)) ?? []
        for name in names where name.hasPrefix(".staging-") {
            let dir = home.snapshots.appendingPathComponent(name)
            if let lock = try? FileLock.tryAcquire(dir.appendingPathComponent(".lock")) {
                try? FileManager.default.removeItem(at: dir)
                withExtendedLifetime(lock) {}
            }
        }
    }

    /// The file a format 3 snapshot's frame list is kept in, beside its manifest.
    public static let memoryFramesName = "memory.frames"

    /// How big a frame list's delta may grow, against its base's stored size, before the list
    /// becomes a base of its own.
    static let maxFramesDeltaShare = 0.3

    /// Writes `manifest.json` into `folder` (fsynced, atomically), its RAM frame list first into a
    /// file of its own beside it (`memoryFramesFile`): a delta over `parent`'s base list while
    /// that stores in at most `maxFramesDeltaShare` of the base's bytes, else over itself, stored
    /// as a new base in the chunk store (`parent.base`: its base list, when the caller has read
    /// it). Returns the manifest as written, with its frames. Callers hold the chunk writers' lock.
    func writeManifest(_ manifest: SnapshotManifest, in folder: URL,
                       parent: (manifest: SnapshotManifest, base: BaseList?)? = nil) throws -> SnapshotManifest {
        var stored = manifest
        if let frames = manifest.memoryFrames {
            let store = try chunkStore()
            var kept: (ChunkRef, [UInt8])? = nil
            if let base = parent?.manifest.memoryFramesBase, let baseList = parent?.base ?? (try? readBase(base)),
               let delta = try FrameListDelta(frames, over: baseList.list) {
                let encoded = try Self.encode(delta, over: baseList.json)
                if Double(encoded.count) <= Double(base.storedSize) * Self.maxFramesDeltaShare { kept = (base, encoded) }
            }
            let (base, encoded) = try kept ?? newBase(frames, store: store)
            let url = folder.appendingPathComponent(Self.memoryFramesName)
            try AtomicFile.write(Data(encoded), to: url)
            stored.memoryFrames = nil
            stored.memoryFramesFile = try Self.part(url)
            stored.memoryFramesBase = base
            stored.memoryFramesStoredBytes = frames.storedBytes
        }
        try AtomicFile.writeJSON(stored, to: folder.appendingPathComponent("manifest.json"))
        stored.memoryFrames = manifest.memoryFrames
        return stored
    }

    /// Reads one snapshot's manifest, with its RAM frame list unless `frames` is false (then
    /// `memoryFrames` is nil and `memoryFramesFile` says where it is).
    public func manifest(_ id: String, frames: Bool = true) throws -> SnapshotManifest {
        try manifestAndBase(id, frames: frames).manifest
    }

    /// `manifest(id)`, with the base list its frame list was put together over (nil for a
    /// format 2 list, or without `frames`): a snapshot of the same machine starts from it.
    func manifestAndBase(_ id: String, frames: Bool = true) throws -> (manifest: SnapshotManifest, base: BaseList?) {
        let url = directory(id).appendingPathComponent("manifest.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw StasisError(.notFound, "no snapshot '\(id)': `stasis snapshots` lists them")
        }
        var manifest = try AtomicFile.readJSON(SnapshotManifest.self, from: url)
        guard SnapshotManifest.readableFormats.contains(manifest.format) else {
            throw StasisError(.unsupported, "snapshot \(id) has format \(manifest.format); this stasis reads formats \(SnapshotManifest.readableFormats.lowerBound) to \(SnapshotManifest.readableFormats.upperBound)")
        }
        var base: BaseList? = nil
        if frames, manifest.memoryFrames == nil, let part = manifest.memoryFramesFile {
            (manifest.memoryFrames, base) = try readFrameList(manifest, part)
        }
        return (manifest, base)
    }

    /// Stores `frames` whole as a chunk, to be the base of its own and later snapshots' deltas;
    /// returns it and the (empty) delta over it, encoded.
    private func newBase(_ frames: FrameList, store: ChunkStore) throws -> (ChunkRef, [UInt8]) {
        let json = Array(try JSONEncoder().encode(frames))
        guard let base = try store.put(json, level: Self.frameListLevel), let delta = try FrameListDelta(frames, over: frames) else {
            throw StasisError(.internalError, "a frame list cannot be stored as its own base")
        }
        try store.sync()
        return (base, try Self.encode(delta, over: json))
    }

    /// A frame list delta as `memory.frames` holds it (format 4): JSON in one zstd frame
    /// compressed against the base list's JSON, so the chunk names it shares with the base (the
    /// chunk under every repatched frame, patches kept) cost a few bytes each, not 32.
    private static func encode(_ delta: FrameListDelta, over baseJSON: [UInt8]) throws -> [UInt8] {
        try Zstd().compress(Array(try JSONEncoder().encode(delta)), level: frameListLevel, prefix: baseJSON)
    }

    /// The zstd level of frame lists, bases and deltas: one small file per snapshot, written once
    /// and read whole, so a strong level pays. Measured on a 44 KB delta over a 131 KB base list:
    /// level 15 is 15 % smaller than level 3 (12 % for the base) for ~10 ms more; 19 is no
    /// smaller and slower.
    static let frameListLevel = 15

    /// A base frame list from the chunk store, checked against its hash and as it decodes.
    func readBase(_ base: ChunkRef) throws -> BaseList {
        let json = try chunkStore().get(base)
        return BaseList(json: json, list: try JSONDecoder().decode(FrameList.self, from: Data(json)))
    }

    /// `manifest` (read without its frames) with its frame list, its base taken from `bases`.
    func withFrames(_ manifest: SnapshotManifest, bases: BaseLists) throws -> SnapshotManifest {
        guard manifest.memoryFrames == nil, let part = manifest.memoryFramesFile else { return manifest }
        var whole = manifest
        whole.memoryFrames = try readFrameList(manifest, part, bases: bases).list
        return whole
    }

    /// Reads a snapshot's frame list: the delta in its file (whose digest `verify` checks) over
    /// its base list from the store; both check themselves as they decode, and the list put
    /// back together must have the digest the delta recorded. Damage is `.corrupted`, naming
    /// the snapshot.
    /// `bases`: base lists already read, by hash, for a caller that reads many lists (gc).
    private func readFrameList(_ manifest: SnapshotManifest, _ part: SnapshotManifest.Part,
                               bases: BaseLists? = nil) throws -> (list: FrameList, base: BaseList?) {
        let url = directory(manifest.id).appendingPathComponent(part.file)
        do {
            let compressed = [UInt8](try Data(contentsOf: url))
            guard compressed.count == part.size else {
                throw StasisError(.corrupted, "\(url.path) is \(compressed.count) bytes; the manifest lists \(part.size)")
            }
            guard let size = Zstd.declaredSize(compressed) else {
                throw StasisError(.corrupted, "\(url.path) is damaged: the frame list's zstd frame does not record its size")
            }
            guard let base = manifest.memoryFramesBase else {
                let json = Data(try Zstd().decompress(compressed, expectedSize: size, maxSize: 1 << 30))
                return (try JSONDecoder().decode(FrameList.self, from: json), nil)
            }
            let baseList = try bases?.base(base, in: self) ?? readBase(base)
            let json = Data(try Zstd().decompress(compressed, expectedSize: size, maxSize: 1 << 30,
                                                  prefix: manifest.framesDeltaIsOverBaseJSON ? baseList.json : nil))
            let delta = try JSONDecoder().decode(FrameListDelta.self, from: json)
            return (try delta.applied(to: baseList.list), baseList)
        } catch {
            throw StasisError((error as? StasisError)?.code == .notFound ? .notFound : .corrupted,
                              "snapshot \(manifest.id) is damaged: its RAM frame list (\(part.file) over base \(manifest.memoryFramesBase?.hash ?? "none")) cannot be read", cause: error)
        }
    }

    /// Every complete snapshot, oldest first, without their RAM frame lists (`manifest(id)` reads
    /// one whole).
    public func list() throws -> [SnapshotManifest] {
        sweepAbandonedStaging()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: home.snapshots.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.compactMap { try? manifest($0, frames: false) }.sorted { $0.created < $1.created }
    }

    /// Finds a snapshot by id, unique id prefix, or tag (the newest with that tag); with its
    /// frame list unless `frames` is false (removing a snapshot needs none, even a damaged one).
    public func find(_ reference: String, frames: Bool = true) throws -> SnapshotManifest {
        guard !reference.isEmpty else { throw StasisError(.invalidArgument, "no snapshot given") }
        // A whole id (what sessions and forks use) is one file to read, not every manifest.
        if reference.count == 12, reference.allSatisfy(\.isHexDigit), reference == reference.lowercased(),
           FileManager.default.fileExists(atPath: directory(reference).appendingPathComponent("manifest.json").path) {
            return try manifest(reference, frames: frames)
        }
        let all = try list()
        if let exact = all.first(where: { $0.id == reference }) { return try manifest(exact.id, frames: frames) }
        let prefixed = all.filter { $0.id.hasPrefix(reference) }
        if prefixed.count == 1 { return try manifest(prefixed[0].id, frames: frames) }
        if prefixed.count > 1 {
            throw StasisError(.invalidArgument, "'\(reference)' matches several snapshots: give more of the id")
        }
        if let tagged = all.last(where: { $0.tag == reference }) { return try manifest(tagged.id, frames: frames) }
        throw StasisError(.notFound, "no snapshot '\(reference)': `stasis snapshots` lists them")
    }

    /// Checks every part against its size and digest, so that a damaged snapshot is refused
    /// before QEMU ever reads it. A part is hashed once and then trusted while its file identity
    /// (inode, size, mtime, ctime) stays the one recorded in `.verified.json`. RAM frames are
    /// checked for presence here and for content as they are read (`materializeMemory`); `deep`
    /// hashes every part and reads and checks every frame now. An eager restore passes
    /// `framesPresent: false`: writing the RAM reads every chunk anyway and names a missing one by
    /// snapshot and frame before QEMU starts, and checking a long session's thousands of chunks
    /// and hundreds of packs first cost it ~4 ms.
    public func verify(_ manifest: SnapshotManifest, deep: Bool = false, framesPresent: Bool = true) throws {
        // A listed manifest comes without its frame list: it is read here.
        if let frames = try manifest.memoryFrames ?? manifest.memoryFramesFile.map({ try readFrameList(manifest, $0).list }) {
            if let identity = frames.reference { try checkReference(manifest, identity) }
            let chunks = try chunkStore()
            if framesPresent || deep { try checkFramesPresent(manifest, frames, in: chunks) }
            if deep {
                do { try memoryFile(manifest, frames: frames, store: chunks).verify() } catch {
                    throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: \(Self.describe(error)) of its memory", cause: error)
                }
            }
        }
        try verifyParts(manifest, deep: deep)
    }

    /// Checks that every chunk and pack `frames` names is in the store.
    private func checkFramesPresent(_ manifest: SnapshotManifest, _ frames: FrameList, in chunks: ChunkStore) throws {
        let packed = Set(frames.chunks).subtracting(frames.storeChunks)
        for position in frames.chunks.indices where !packed.contains(frames.chunks[position]) && !chunks.contains(frames.chunks[position]) {
            let frame = frames.frameIndex(ofChunk: position) ?? 0
            throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: frame \(frame) of its memory (chunk \(frames.chunks[position])) is missing from the chunk store")
        }
        for (name, length) in frames.packLengths {
            let pack = name == FrameList.ownPack ? memoryPack(manifest.id) : chunks.packURL(name)
            var st = stat()
            guard stat(pack.path, &st) == 0, Int(st.st_size) >= length else {
                throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: the pack \(pack.path) is missing or shorter than the \(length) bytes its memory's page patches need")
            }
        }
    }

    /// Checks the device state's base and inline delta, and every part against its size and
    /// digest (or its recorded file identity).
    private func verifyParts(_ manifest: SnapshotManifest, deep: Bool) throws {
        if let base = manifest.stateBase, !(try chunkStore().contains(base.hash)) {
            throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: the base its device state is a delta over (chunk \(base.hash)) is missing from the chunk store")
        }
        if let inline = manifest.stateInline, Self.inlineDigest(inline) != manifest.state.digest {
            throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: its device state delta (inline in the manifest) does not match its checksum")
        }
        let dir = directory(manifest.id)
        // Files already hashed are skipped while their identity is unchanged (any write changes
        // mtime and ctime; a copy is a new inode); `deep` hashes everything.
        let markerURL = dir.appendingPathComponent(".verified.json")
        let verified = deep ? [:] : (try? AtomicFile.readJSON([String: String].self, from: markerURL)) ?? [:]
        var identities: [String: String] = [:]
        for part in manifest.parts {
            let url = dir.appendingPathComponent(part.file)
            var st = stat()
            guard stat(url.path, &st) == 0 else {
                throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: its \(part.file) is missing")
            }
            guard UInt64(st.st_size) == part.size else {
                throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: \(part.file) has \(st.st_size) bytes, the manifest says \(part.size)")
            }
            let identity = "\(part.digest) " + (FileIdentity.of(url.path) ?? "")
            identities[part.file] = identity
            if verified[part.file] == identity { continue }
            guard try FileDigest.of(url) == part.digest else {
                // Never trusted again by identity: the next restore hashes it too.
                try? FileManager.default.removeItem(at: markerURL)
                throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: \(part.file) does not match its checksum")
            }
        }
        if identities != verified { try? AtomicFile.writeJSON(identities, to: markerURL) }
    }

    /// Writes snapshot `manifest`'s RAM into a new sparse file at `url` (not fsynced: a machine's
    /// RAM need not survive a crash), checking every frame; a damaged frame names the snapshot,
    /// the frame and its chunk.
    public func materializeMemory(_ manifest: SnapshotManifest, to url: URL, durable: Bool = false) throws {
        guard let frames = manifest.memoryFrames else {
            throw StasisError(.internalError, "snapshot \(manifest.id) keeps no RAM frames")
        }
        do {
            try memoryFile(manifest, frames: frames, store: try chunkStore()).materialize(to: url, durable: durable)
        } catch {
            // A chunk missing from the store is damage to the snapshot, not an unknown snapshot.
            let code = (error as? StasisError)?.code ?? .ioFailure
            throw StasisError(code == .notFound ? .corrupted : code,
                              "snapshot \(manifest.id) cannot be restored: \(Self.describe(error)) of its memory is damaged or missing", cause: error)
        }
    }

    /// The RAM file forks of `manifest` map privately: its format-1 `memory` file, or the cache
    /// materialized from its frames (made once, under a lock, then reused).
    public func sharedMemoryFile(_ manifest: SnapshotManifest) throws -> URL? {
        if let memory = manifest.memory { return directory(manifest.id).appendingPathComponent(memory.file) }
        guard manifest.memoryFrames != nil else { return nil }
        let cache = memoryCache(manifest.id)
        return try FileLock.withLock(directory(manifest.id).appendingPathComponent(".memory.lock")) {
            if !FileManager.default.fileExists(atPath: cache.path) {
                try materializeMemory(manifest, to: cache, durable: true)
            }
            return cache
        }
    }

    /// "frame N (chunk H)" from a chunk error, without the store's path noise.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? StasisError else { return "a frame" }
        return error.message.components(separatedBy: " of /").first ?? error.message
    }

    /// Describes a file for the manifest.
    static func part(_ url: URL) throws -> SnapshotManifest.Part {
        var st = stat()
        guard stat(url.path, &st) == 0 else { throw StasisError(.ioFailure, "cannot stat \(url.path)", cause: Errno()) }
        return SnapshotManifest.Part(file: url.lastPathComponent, size: UInt64(st.st_size),
                                     allocated: UInt64(st.st_blocks) * 512, digest: try FileDigest.of(url))
    }

    /// What depends on snapshot `id`: snapshots whose disk sits on it, machines restored from it.
    public func dependents(of id: String, machines: [MachineRecord]) throws -> (snapshots: [String], machines: [String]) {
        let disk = directory(id).appendingPathComponent("disk.qcow2").path
        let memory = directory(id).appendingPathComponent("memory").path
        let cache = memoryCache(id).path
        // A snapshot whose disk sits on this one's needs it; a child whose disk was collapsed
        // onto the image (its `parent` is history) does not.
        let snapshots = try list().filter { $0.id != id && $0.diskBase == disk }.map(\.id)
        let users = machines.filter {
            $0.diskBase == disk || $0.memoryFile == memory || $0.memoryFile == cache || $0.restoredFrom == id
        }.map(\.name)
        return (snapshots, users)
    }

    /// Deletes a snapshot. Refused while a machine or another snapshot depends on it; with
    /// `force`, dependent snapshots first get the layers they need copied into their own disk
    /// (qemu-img rebase), and machines that depend on it must still be removed first.
    public func remove(_ id: String, force: Bool, machines: [MachineRecord]) async throws {
        let manifest = try self.manifest(id, frames: false)
        let (snapshots, users) = try dependents(of: id, machines: machines)
        if !users.isEmpty {
            throw StasisError(.invalidState, "snapshot \(id) is in use by machine\(users.count > 1 ? "s" : "") \(users.joined(separator: ", ")): remove \(users.count > 1 ? "them" : "it") first (`stasis rm -f`)")
        }
        if !snapshots.isEmpty {
            guard force else {
                throw StasisError(.invalidState, "snapshot \(id) is the parent of \(snapshots.joined(separator: ", ")): remove those first, or use --force to make them stand alone")
            }
            for child in snapshots {
                var childManifest = try self.manifest(child, frames: false)
                let childDisk = directory(child).appendingPathComponent("disk.qcow2")
                // Safe rebase: the child gets the data it read through this snapshot's layer.
                try await HostTool.run("qemu-img", ["rebase", "-f", "qcow2", "-b", manifest.diskBase, "-F", manifest.diskBaseFormat, childDisk.path])
                childManifest.diskBase = manifest.diskBase
                childManifest.parent = manifest.parent
                childManifest.disk = try Self.part(childDisk)
                try AtomicFile.writeJSON(childManifest, to: directory(child).appendingPathComponent("manifest.json"))
            }
        }
        // Rename out of sight first, so a crash halfway never leaves half a snapshot listed.
        let trash = home.tmp.appendingPathComponent("rm-snapshot-\(id)-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: home.tmp, withIntermediateDirectories: true)
        try AtomicFile.rename(directory(id), over: trash)
        try? FileManager.default.removeItem(at: trash)
    }
}

/// A base frame list as read from the chunk store: its JSON, which deltas over it are compressed
/// against, and the list itself.
struct BaseList: Sendable {
    let json: [UInt8]
    let list: FrameList
}

/// Base frame lists read once for a caller that reads many lists: a session's snapshots share
/// one base for dozens of snapshots, so gc decodes each base once, not once per snapshot.
final class BaseLists {
    private var read: [String: BaseList] = [:]

    func base(_ ref: ChunkRef, in store: SnapshotStore) throws -> BaseList {
        if let known = read[ref.hash] { return known }
        let loaded = try store.readBase(ref)
        read[ref.hash] = loaded
        return loaded
    }
}
