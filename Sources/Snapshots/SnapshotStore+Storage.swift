import ChunkStore
import Foundation
import Machines
import StasisCore

/// What `stasis gc` freed.
public struct GarbageCollection: Sendable, Encodable {
    /// Chunks no snapshot lists, deleted.
    public var chunksRemoved: Int
    /// Packs of page chunks no snapshot lists, deleted.
    public var packsRemoved: Int
    /// Their stored bytes (chunks and packs).
    public var bytesFreed: Int
    /// RAM caches of snapshots (`memory.cache`) that no machine maps, deleted.
    public var cachesRemoved: Int
    /// Their allocated bytes.
    public var cacheBytesFreed: Int
    /// Chunks still stored, all of them listed by some snapshot.
    public var chunksKept: Int
}

/// What `stasis df` shows: what the snapshots would take as plain files against what they take.
public struct StorageUsage: Sendable, Encodable {
    public var snapshots: Int
    /// Snapshots whose RAM frame list cannot be read (damaged, or its base list is missing):
    /// counted from what their manifests record for listings. They cannot be restored, and gc
    /// refuses to run until they are removed.
    public var damagedSnapshots: Int
    /// Guest RAM the snapshots describe, zeros included (their machines' memory sizes).
    public var memoryLogicalBytes: Int
    /// What each snapshot's RAM frames would take stored alone, summed over snapshots.
    public var memoryReferencedBytes: Int
    /// What the chunk store takes: every frame once, in a file of its own or a pack.
    public var chunkStoreBytes: Int
    public var chunks: Int
    /// Device state, disk layers and (for older snapshots) packed RAM page patches, kept as
    /// files in the snapshot folders (allocated bytes).
    public var stateAndDiskBytes: Int
    /// RAM caches materialized for forks (allocated bytes); `stasis gc` drops unused ones.
    public var cacheBytes: Int
    /// memoryReferencedBytes / chunkStoreBytes: how many times over shared frames are used.
    public var dedupRatio: Double
    /// Everything on disk for snapshots: chunk store, state, disks, caches.
    public var totalBytes: Int { chunkStoreBytes + stateAndDiskBytes + cacheBytes }
}

extension SnapshotStore {
    /// Deletes chunks no snapshot lists, and RAM caches no machine maps. Waits for snapshots being
    /// written to commit first; a kill -9 at any point deletes nothing a manifest lists, because a
    /// chunk is removed only after every manifest was read. Refuses to run when a snapshot's
    /// manifest cannot be read, since its chunks would look unused.
    /// `machines` is read once the lock is held, so a fork that finished just before is seen.
    /// `dropCaches: false` keeps RAM caches (a server that sweeps old snapshots as it goes).
    /// Blocks while snapshots are being written: call it off the cooperative pool.
    public func collectGarbage(machines: () throws -> [MachineRecord], dropCaches: Bool = true) throws -> GarbageCollection {
        try home.prepare()
        let lock = try FileLock.acquire(chunkWritersLock)
        defer { withExtendedLifetime(lock) {} }
        let manifests = try allManifestsStrictly()
        let referenced = Set(manifests.flatMap { ($0.memoryFrames?.chunks ?? []) + [$0.memoryFramesBase?.hash, $0.stateBase?.hash].compactMap { $0 } })
        let referencedPacks = Set(manifests.flatMap { $0.memoryFrames?.packs ?? [] })
        let chunks = try chunkStore()
        var result = GarbageCollection(chunksRemoved: 0, packsRemoved: 0, bytesFreed: 0, cachesRemoved: 0, cacheBytesFreed: 0,
                                       chunksKept: 0)
        for (hash, size) in try chunks.allChunks() {
            if referenced.contains(hash) {
                result.chunksKept += 1
            } else if try chunks.remove(hash) {
                result.chunksRemoved += 1
                result.bytesFreed += size
            }
        }
        for (name, size) in try chunks.allPacks() where !referencedPacks.contains(name) {
            if try chunks.removePack(name) {
                result.packsRemoved += 1
                result.bytesFreed += size
            }
        }
        // Writers killed mid-write left these; none runs now.
        try chunks.removeTemporaryFiles()
        try chunks.sync()
        // Reference files (kernels) no snapshot's frames are stored against any more.
        let usedReferences = Set(manifests.compactMap { $0.memoryFrames?.reference.map { KernelReference.storedPath(home: home, digest: $0.digest).lastPathComponent } })
        for name in (try? FileManager.default.contentsOfDirectory(atPath: home.references.path)) ?? [] where !usedReferences.contains(name) {
            try? FileManager.default.removeItem(at: home.references.appendingPathComponent(name))
        }
        let mapped = Set(try machines().compactMap(\.memoryFile))
        for manifest in manifests where manifest.memoryFrames != nil {
            let folder = directory(manifest.id)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
            where name.hasPrefix(".memory.cache.tmp-") {
                try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
            }
            guard dropCaches else { continue }
            let cache = memoryCache(manifest.id)
            guard !mapped.contains(cache.path), let bytes = Self.allocatedBytes(cache) else { continue }
            try FileLock.withLock(directory(manifest.id).appendingPathComponent(".memory.lock")) {
                try? FileManager.default.removeItem(at: cache)
            }
            result.cachesRemoved += 1
            result.cacheBytesFreed += bytes
        }
        return result
    }

    /// Logical against stored bytes of every snapshot, from the figures its manifest records: no
    /// frame list is decoded (a session of 300 snapshots took 2 s when each was). A snapshot
    /// whose frame list file does not match its digest, or whose base list is missing, counts in
    /// `damagedSnapshots`.
    public func usage() throws -> StorageUsage {
        let manifests = try list()
        let store = try chunkStore()
        let damaged = manifests.filter { !frameListLooksWhole($0, store: store) }.count
        let chunks = try store.allChunks()
        let packBytes = try store.allPacks().reduce(0) { $0 + $1.size }
        var usage = StorageUsage(snapshots: manifests.count, damagedSnapshots: damaged, memoryLogicalBytes: 0, memoryReferencedBytes: 0,
                                 chunkStoreBytes: chunks.reduce(0) { $0 + $1.size } + packBytes, chunks: chunks.count,
                                 stateAndDiskBytes: 0, cacheBytes: 0, dedupRatio: 1)
        for manifest in manifests {
            // Page patches packed in an older snapshot's folder are its own, like its state and disk.
            let ownPack = memoryPack(manifest.id)
            let ownPackBytes: Int
            if let frames = manifest.memoryFrames {
                ownPackBytes = frames.ownPackBytes
                usage.memoryLogicalBytes += frames.totalSize
                usage.memoryReferencedBytes += frames.storedBytes - ownPackBytes
            } else if manifest.memoryFramesFile != nil {
                // The sizes the manifest recorded from its list when it was taken.
                ownPackBytes = Self.fileSize(ownPack) ?? 0
                usage.memoryLogicalBytes += manifest.spec.memoryMiB << 20
                usage.memoryReferencedBytes += (manifest.memoryFramesStoredBytes ?? 0) - ownPackBytes
            } else {
                ownPackBytes = 0
                usage.memoryLogicalBytes += Int(manifest.memory?.size ?? 0)
            }
            usage.stateAndDiskBytes += manifest.parts.reduce(0) { $0 + Int($1.allocated) }
                + (ownPackBytes > 0 ? Self.allocatedBytes(ownPack) ?? 0 : 0)
            usage.cacheBytes += Self.allocatedBytes(memoryCache(manifest.id)) ?? 0
        }
        if usage.chunkStoreBytes > 0 {
            usage.dedupRatio = Double(usage.memoryReferencedBytes) / Double(usage.chunkStoreBytes)
        }
        return usage
    }

    /// Whether a snapshot's frame list file matches its digest and its base list is in the
    /// store (true for a manifest that keeps no list file).
    private func frameListLooksWhole(_ manifest: SnapshotManifest, store: ChunkStore) -> Bool {
        guard let part = manifest.memoryFramesFile else { return true }
        guard (try? FileDigest.of(directory(manifest.id).appendingPathComponent(part.file))) == part.digest else { return false }
        return manifest.memoryFramesBase.map { store.contains($0.hash) } ?? true
    }

    /// Every snapshot's manifest; unlike `list`, one that cannot be read, or a snapshots folder
    /// that cannot be listed, is an error: gc would take their chunks for garbage.
    private func allManifestsStrictly() throws -> [SnapshotManifest] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: home.snapshots.path) } catch {
            throw StasisError(.ioFailure, "cannot list \(home.snapshots.path), so gc cannot tell which chunks are in use: nothing was removed", cause: error)
        }
        // Snapshots of a session share a base list: each is read and decoded once.
        let bases = BaseLists()
        let chunks = try chunkStore()
        return try names.filter { !$0.hasPrefix(".") }.map { name in
            let listed: SnapshotManifest
            do { listed = try manifest(name, frames: false) } catch {
                throw StasisError(.corrupted, "snapshot \(name) has no readable manifest, so gc cannot tell which chunks it needs: remove its folder \(directory(name).path) or restore its manifest.json, then run gc again", cause: error)
            }
            do { return try withFrames(listed, bases: bases) } catch {
                let what = if let base = listed.memoryFramesBase, !chunks.contains(base.hash) {
                    "the base frame list of snapshot \(name)'s RAM (chunk \(base.hash)) is missing from the chunk store"
                } else {
                    "the RAM frame list of snapshot \(name) (\(directory(name).appendingPathComponent(listed.memoryFramesFile?.file ?? Self.memoryFramesName).path)) cannot be read"
                }
                throw StasisError(.corrupted, "\(what), so gc cannot tell which chunks the snapshot needs and removed nothing. The snapshot cannot be restored: `stasis snapshot rm \(name)` drops it (without reading its frame list), then run gc again", cause: error)
            }
        }
    }

    private static func fileSize(_ url: URL) -> Int? {
        var st = stat()
        guard stat(url.path, &st) == 0 else { return nil }
        return Int(st.st_size)
    }

    private static func allocatedBytes(_ url: URL) -> Int? {
        var st = stat()
        guard stat(url.path, &st) == 0 else { return nil }
        return Int(st.st_blocks) * 512
    }
}
