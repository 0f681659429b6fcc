import Foundation
import StasisCore

/// The root filesystem images under `home.images`: `<name>/image.json` and `<name>/rootfs.ext4`.
///
/// An image is built in a staging folder under `home.tmp` and renamed into place last, so a crash,
/// an error or a cancellation never leaves a half-written image behind. Long work (extraction, mkfs,
/// mmdebstrap) runs off the actor, so listing stays responsive while an image is being made.
public actor ImageStore {
    /// The Stasis home this store lives in.
    public let home: StasisHome
    /// Names being made right now: a second import of one of them fails at once, not after the work.
    private var reserved: Set<String> = []

    /// A store over `home.images`.
    public init(home: StasisHome) {
        self.home = home
    }

    /// Every complete image, sorted by name; folders without valid metadata or disk are skipped.
    public func list() throws -> [ImageRecord] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: home.images.path)
        } catch {
            if !FileManager.default.fileExists(atPath: home.images.path) { return [] }
            throw StasisError(.ioFailure, "cannot list \(home.images.path)", cause: error)
        }
        var records: [ImageRecord] = []
        for name in names where (try? ImageRecord.validateName(name)) != nil {
            if let record = try? load(name) { records.append(record) }
        }
        return records.sorted { $0.name < $1.name }
    }

    /// The image called `name`; `.notFound` if there is none.
    public func image(named name: String) throws -> ImageRecord {
        try ImageRecord.validateName(name)
        return try load(name)
    }

    /// Deletes the image called `name`: it leaves the store at once (one rename), then its files go.
    public func remove(named name: String) throws {
        try ImageRecord.validateName(name)
        let folder = home.images.appendingPathComponent(name, isDirectory: true)
        guard FileManager.default.fileExists(atPath: folder.path) else { throw notFound(name) }
        try home.prepare()
        let doomed = home.tmp.appendingPathComponent("removing-\(name)-\(Self.randomSuffix())")
        try AtomicFile.rename(folder, over: doomed)
        try AtomicFile.syncDirectory(home.images)
        try RootfsExtractor.removeTree(at: doomed)
    }

    // MARK: - Shared by the import paths

    /// Claims `name` for an image about to be made; `.alreadyExists` if it is taken or being made.
    func reserve(_ name: String) throws {
        try ImageRecord.validateName(name)
        let folder = home.images.appendingPathComponent(name, isDirectory: true)
        if reserved.contains(name) || FileManager.default.fileExists(atPath: folder.path) {
            throw StasisError(.alreadyExists, "an image named '\(name)' already exists: remove it with `stasis image rm \(name)` or choose another name")
        }
        reserved.insert(name)
    }

    /// Gives a name back after its import finished or failed.
    func release(_ name: String) {
        reserved.remove(name)
    }

    private func load(_ name: String) throws -> ImageRecord {
        let folder = home.images.appendingPathComponent(name, isDirectory: true)
        let metadata = folder.appendingPathComponent(ImageRecord.metadataFileName)
        guard FileManager.default.fileExists(atPath: metadata.path) else { throw notFound(name) }
        let record = try AtomicFile.readJSON(ImageRecord.self, from: metadata)
        guard record.name == name, !record.disk.isEmpty, !record.disk.contains("/"), record.disk != "..", record.disk != "." else {
            throw StasisError(.corrupted, "\(metadata.path) does not describe an image named '\(name)'")
        }
        guard FileManager.default.fileExists(atPath: record.diskURL(in: home).path) else {
            throw StasisError(.corrupted, "image '\(name)' has lost its disk \(record.diskURL(in: home).path): remove it with `stasis image rm \(name)`")
        }
        return record
    }

    private func notFound(_ name: String) -> StasisError {
        StasisError(.notFound, "no image named '\(name)': run `stasis images` to list them, or `stasis image build`")
    }

    static func randomSuffix() -> String {
        String(UInt64.random(in: 0 ... .max), radix: 36)
    }
}
