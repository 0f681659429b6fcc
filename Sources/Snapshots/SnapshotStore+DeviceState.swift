import ChunkStore
import Crypto
import Foundation
import StasisCore

/// Device state as a delta: consecutive snapshots of a session differ in ~40 bytes of QEMU's
/// ~68 KB device state, so each stores one zstd frame compressed against a base state kept as a
/// chunk (~100-300 bytes) instead of the whole stream (~16 KB compressed). The base is always a
/// whole stream, never another delta, so restoring reads two things however long the session.
extension SnapshotStore {
    /// How big a state delta may grow, against its base's stored size, before the state becomes
    /// a base of its own.
    static let maxStateDeltaShare = 0.25

    /// The largest device state stream stored as a delta; a bigger one (RAM in the stream) is
    /// left as it is.
    static let maxDeltaStateSize = 16 << 20

    /// Rewrites `file`, QEMU's raw device state, as one zstd frame over `parentBase` (the
    /// parent's base state) while that stays small, else over itself, stored as a new base in
    /// the chunk store. Returns the base, or nil when the stream is too big to keep as a delta
    /// (then `file` is left as it is). Callers hold the chunk writers' lock.
    func storeDeviceState(_ file: URL, over parentBase: ChunkRef?) throws -> ChunkRef? {
        let size = try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int ?? 0
        guard size > 0, size <= Self.maxDeltaStateSize else { return nil }
        let raw = [UInt8](try Data(contentsOf: file))
        guard !Self.isZstd(raw) else { return nil }  // already compressed: not QEMU's raw stream
        let store = try chunkStore()
        let zstd = try Zstd()
        var kept: (ChunkRef, [UInt8])? = nil
        if let parentBase, let base = try? store.get(parentBase, codec: zstd) {
            let delta = try zstd.compress(raw, prefix: base)
            if Double(delta.count) <= Double(parentBase.storedSize) * Self.maxStateDeltaShare { kept = (parentBase, delta) }
        }
        let (base, delta) = try kept ?? {
            guard let base = try store.put(raw, codec: zstd) else {
                throw StasisError(.internalError, "a device state of \(raw.count) zero bytes cannot be a base")
            }
            try store.sync()
            return (base, try zstd.compress(raw, prefix: raw))
        }()
        try AtomicFile.write(Data(delta), to: file)
        return base
    }

    /// The largest state delta kept in the manifest rather than in a file (`stateInline`).
    static let maxInlineStateSize = 1024

    /// Moves a small state delta, `file` as `storeDeviceState` left it, into `manifest` and
    /// removes the file; a bigger one stays where it is.
    func inlineDeviceState(_ manifest: inout SnapshotManifest, from file: URL) throws {
        let delta = try Data(contentsOf: file)
        guard manifest.stateBase != nil, delta.count <= Self.maxInlineStateSize else { return }
        manifest.stateInline = delta
        manifest.state = .init(file: manifest.state.file, size: UInt64(delta.count), allocated: 0, digest: Self.inlineDigest(delta))
        try FileManager.default.removeItem(at: file)
    }

    /// The digest `state` records for an inline delta: plain SHA-256 of its bytes.
    static func inlineDigest(_ bytes: Data) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// Writes `manifest`'s whole device state stream to `output`: its `state` part put back
    /// together over its base. Damage (a missing or wrong base, a frame that does not decode
    /// over it) is `.corrupted`, naming the snapshot.
    public func restoreDeviceState(_ manifest: SnapshotManifest, to output: URL) throws {
        guard let base = manifest.stateBase else {
            throw StasisError(.internalError, "snapshot \(manifest.id) keeps its device state whole, not as a delta")
        }
        let place = manifest.stateInline == nil ? manifest.state.file : "the manifest's inline delta"
        do {
            let delta: [UInt8]
            if let inline = manifest.stateInline {
                guard Self.inlineDigest(inline) == manifest.state.digest else {
                    throw StasisError(.corrupted, "the inline delta does not match its checksum")
                }
                delta = [UInt8](inline)
            } else {
                delta = [UInt8](try Data(contentsOf: directory(manifest.id).appendingPathComponent(manifest.state.file)))
            }
            try Data(try deviceState(delta, over: base)).write(to: output)
        } catch {
            throw StasisError(.corrupted, "snapshot \(manifest.id) is damaged: its device state (\(place) over base \(base.hash)) cannot be read",
                              cause: error)
        }
    }

    /// The whole device state stream that `delta` (as `storeDeviceState` wrote it) holds over `base`.
    func deviceState(_ delta: [UInt8], over base: ChunkRef) throws -> [UInt8] {
        let zstd = try Zstd()
        let prefix = try chunkStore().get(base, codec: zstd)
        guard let size = Zstd.declaredSize(delta), size > 0, size <= Self.maxDeltaStateSize else {
            throw StasisError(.corrupted, "the device state delta is not a zstd frame that records its size")
        }
        return try zstd.decompress(delta, expectedSize: size, maxSize: Self.maxDeltaStateSize, prefix: prefix)
    }

    private static func isZstd(_ bytes: [UInt8]) -> Bool { bytes.starts(with: [0x28, 0xb5, 0x2f, 0xfd]) }
}
