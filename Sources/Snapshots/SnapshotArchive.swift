import ChunkStore
import Foundation
import Images
import Machines
import StasisCore

/// A whole snapshot in one file, to move it to another host: a tar stream (manifest.json, state,
/// memory, disk.qcow2) cut into 1 MiB independent zstd frames with a seek table at the end: the
/// standard zstd seekable format, so `zstd -d FILE | tar -t` reads it. The disk is collapsed onto
/// the image it was booted from; the importing host must have that image.
public struct SnapshotArchive: Sendable {
    /// Bytes of tar stream per zstd frame.
    static let frameSize = 1 << 20
    /// The members an archive may hold, in the order they are written.
    static let members = ["manifest.json", "state", "memory", "disk.qcow2"]

    let home: StasisHome
    let store: SnapshotStore

    public init(home: StasisHome) {
        self.home = home
        self.store = SnapshotStore(home: home)
    }

    /// What an export or import did.
    public struct Summary: Sendable, Encodable {
        public var snapshot: String
        public var file: String
        public var archiveBytes: UInt64
        public var contentBytes: UInt64
        public var frames: Int
    }

    /// Writes snapshot `reference` to `file` (replaced atomically).
    public func export(_ reference: String, to file: URL) async throws -> Summary {
        let manifest = try store.find(reference)
        try store.verify(manifest)
        let rootfs = try await ImageStore(home: home).image(named: manifest.image).diskURL(in: home)
        let work = home.tmp.appendingPathComponent("export-\(manifest.id)-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        // The disk without the layers of this host's other snapshots: only what differs from the image.
        let disk = work.appendingPathComponent("disk.qcow2")
        let source = store.directory(manifest.id)
        try await HostTool.run("qemu-img", ["convert", "-O", "qcow2", "-B", rootfs.path, "-F", "raw",
                                            source.appendingPathComponent(manifest.disk.file).path, disk.path])
        var exported = manifest
        // RAM as a plain `memory` file and whole device state, no frame list: the layout format 2
        // reads (format 1 predates zstd-compressed state, which the state here may be).
        exported.format = 2
        exported.parent = nil
        exported.diskBase = rootfs.path
        exported.disk = try SnapshotStore.part(disk)
        // The archive carries RAM as one plain file, so `zstd -d | tar -x` gives the raw memory.
        var memory = manifest.memory.map { source.appendingPathComponent($0.file) }
        if manifest.memoryFrames != nil {
            let raw = work.appendingPathComponent("memory")
            try await runBlocking { [store] in try store.materializeMemory(manifest, to: raw) }
            exported.memory = try SnapshotStore.part(raw)
            exported.memoryFrames = nil
            exported.memoryFramesFile = nil
            exported.memoryFramesBase = nil
            exported.memoryFramesStoredBytes = nil
            exported.memoryAddedBytes = nil
            memory = raw
        }
        // Device state too is carried whole, not as a delta over this host's base state.
        var state = source.appendingPathComponent(manifest.state.file)
        if manifest.stateBase != nil {
            state = work.appendingPathComponent("state")
            try await runBlocking { [store, state] in try store.restoreDeviceState(manifest, to: state) }
            exported.state = try SnapshotStore.part(state)
            exported.stateBase = nil
            exported.stateInline = nil
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let manifestBytes = Array(try encoder.encode(exported))

        let writer = try SeekableWriter(url: file, checksums: false)
        var frames = try FrameWriter(writer)
        try frames.file("manifest.json", bytes: manifestBytes)
        try frames.file("state", url: state)
        if let memory { try frames.file("memory", url: memory) }
        try frames.file("disk.qcow2", url: disk)
        try frames.finish()
        try writer.finish()
        let size = (try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber)?.uint64Value ?? 0
        return Summary(snapshot: manifest.id, file: file.path, archiveBytes: size, contentBytes: frames.written, frames: writer.frameCount)
    }

    /// Reads an archive into this host's snapshots: every part is checked against the manifest's
    /// checksums before the snapshot is committed; its disk is put onto this host's copy of the image.
    public func importArchive(from file: URL, tag: String? = nil) async throws -> SnapshotManifest {
        let reader = try SeekableReader(url: file)
        let (_, staged, lock) = try store.stage()
        defer { withExtendedLifetime(lock) {} }
        do {
            var parser = TarStreamParser(directory: staged, allowed: Set(Self.members))
            for index in 0 ..< reader.frameCount { try parser.feed(try reader.frame(index)) }
            try parser.finish()
            let manifestURL = staged.appendingPathComponent("manifest.json")
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            guard let data = FileManager.default.contents(atPath: manifestURL.path),
                  var manifest = try? decoder.decode(SnapshotManifest.self, from: data)
            else { throw StasisError(.corrupted, "\(file.path) holds no readable snapshot manifest") }
            try FileManager.default.removeItem(at: manifestURL)
            guard SnapshotManifest.readableFormats.contains(manifest.format) else {
                throw StasisError(.unsupported, "\(file.path) holds a format \(manifest.format) snapshot; this stasis reads formats \(SnapshotManifest.readableFormats.lowerBound) to \(SnapshotManifest.readableFormats.upperBound)")
            }
            if (try? store.manifest(manifest.id)) != nil {
                throw StasisError(.alreadyExists, "snapshot \(manifest.id) is already here")
            }
            for part in manifest.parts {
                let url = staged.appendingPathComponent(part.file)
                guard FileManager.default.fileExists(atPath: url.path), try FileDigest.of(url) == part.digest else {
                    throw StasisError(.corrupted, "the \(part.file) of snapshot \(manifest.id) in \(file.path) does not match its checksum")
                }
            }
            let image: ImageRecord
            do { image = try await ImageStore(home: home).image(named: manifest.image) } catch {
                throw StasisError(.notFound, "snapshot \(manifest.id) runs on the image '\(manifest.image)', which this host does not have: build or import it first", cause: error)
            }
            let rootfs = image.diskURL(in: home)
            let disk = staged.appendingPathComponent(manifest.disk.file)
            try await HostTool.run("qemu-img", ["rebase", "-u", "-F", "raw", "-b", rootfs.path, disk.path])
            manifest.diskBase = rootfs.path
            manifest.disk = try SnapshotStore.part(disk)
            if let tag { manifest.tag = tag }
            let writers = try await runBlocking { [store] in try FileLock.acquire(store.chunkWritersLock, shared: true) }
            defer { withExtendedLifetime(writers) {} }
            // RAM comes as a plain file; a frame list named here would be this host's, not the archive's.
            manifest.memoryFramesFile = nil
            manifest.memoryFramesBase = nil
            manifest.stateBase = nil
            manifest.memoryFramesStoredBytes = nil
            if let memory = manifest.memory {
                let cut = try await Snapshotter(home: home).storeMemory(staged.appendingPathComponent(memory.file), kernel: manifest.kernel)
                manifest.memoryFrames = cut.frames
                manifest.memoryAddedBytes = cut.newBytes
                manifest.memory = nil
            }
            manifest.format = SnapshotManifest.currentFormat
            return try store.commit(manifest, staged: staged)
        } catch {
            try? FileManager.default.removeItem(at: staged)
            throw error
        }
    }
}
