import Foundation
import StasisCore

/// The machine records under `$STASIS_HOME/machines`, shared by every stasis process: changes
/// are made under a lock and written atomically, and records are reconciled with the processes
/// that really exist, so a crash or a reboot never leaves a machine listed as running.
public struct MachineStore: Sendable {
    public let home: StasisHome
    public let engine: any MachineEngine

    /// `engine` defaults to QEMU, remembering its version in the home (`QEMUEngine.versionFile`).
    public init(home: StasisHome, engine: (any MachineEngine)? = nil) {
        self.home = home
        self.engine = engine ?? QEMUEngine(versionFile: home.root.appendingPathComponent("qemu-version.json"))
    }

    private var lockURL: URL { home.machines.appendingPathComponent(".lock") }

    /// Names are what users type: keep them simple.
    public static func validateName(_ name: String) throws {
        let ok = !name.isEmpty && name.count <= 63 && name.first.map { $0.isLetter || $0.isNumber } == true
            && name.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" || $0 == "_" || $0 == "." }
        guard ok else {
            throw StasisError(.invalidArgument, "invalid machine name '\(name)': use letters, digits, '-', '_' or '.', starting with a letter or digit (at most 63)")
        }
    }

    /// Fails unless `name` is valid and no machine has it (a check before slow work; `create`
    /// checks again under the lock).
    public func checkNameFree(_ name: String) throws {
        try Self.checkNameFree(name, among: try list())
    }

    private static func checkNameFree(_ name: String, among existing: [MachineRecord]) throws {
        try validateName(name)
        if let other = existing.first(where: { $0.name == name }) {
            throw StasisError(.alreadyExists, "the name '\(name)' is in use by machine \(other.id) (\(other.state.rawValue)): choose another with --name, or remove it with `stasis rm -f \(name)`")
        }
    }

    /// Creates the record and run folder of a new machine.
    public func create(name: String?, spec: MachineSpec, autoRemove: Bool) throws -> MachineRecord {
        try home.prepare()
        return try FileLock.withLock(lockURL) {
            let existing = try loadAll()
            let id = Self.newID(avoiding: Set(existing.map(\.id)))
            let chosen = name ?? Self.generatedName(avoiding: Set(existing.map(\.name)))
            try Self.checkNameFree(chosen, among: existing)
            let record = MachineRecord(id: id, name: chosen, spec: spec, autoRemove: autoRemove, engine: engine.name)
            let paths = MachinePaths(home: home, id: id)
            try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true)
            try AtomicFile.writeJSON(record, to: paths.record)
            return record
        }
    }

    /// Saves a record.
    public func save(_ record: MachineRecord) throws {
        try AtomicFile.writeJSON(record, to: MachinePaths(home: home, id: record.id).record)
    }

    /// Loads one record by id, as written.
    public func load(id: String) throws -> MachineRecord {
        try AtomicFile.readJSON(MachineRecord.self, from: MachinePaths(home: home, id: id).record)
    }

    private func loadAll() throws -> [MachineRecord] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: home.machines.path)) ?? []
        return ids.filter { !$0.hasPrefix(".") }.compactMap { try? load(id: $0) }
    }

    /// All machines, reconciled with the live processes, oldest first. A machine removed by
    /// another process while this one lists is left out.
    public func list() throws -> [MachineRecord] {
        try loadAll().compactMap { record in
            do { return try reconcile(record) } catch {
                if !FileManager.default.fileExists(atPath: MachinePaths(home: home, id: record.id).record.path) { return nil }
                throw error
            }
        }.sorted { $0.created < $1.created }
    }

    /// Finds a machine by name, id, or unique id prefix.
    public func find(_ reference: String) throws -> MachineRecord {
        let all = try loadAll()
        if let match = all.first(where: { $0.name == reference || $0.id == reference }) { return try reconcile(match) }
        let prefixed = all.filter { $0.id.hasPrefix(reference) }
        if prefixed.count == 1 { return try reconcile(prefixed[0]) }
        if prefixed.count > 1 {
            throw StasisError(.invalidArgument, "'\(reference)' matches several machines: give more of the id, or the name")
        }
        throw StasisError(.notFound, "no machine named '\(reference)': `stasis ps -a` lists them")
    }

    /// Turns a record whose process is gone into `stopped` (if it was stopping) or `failed`,
    /// with the end of its console log.
    public func reconcile(_ record: MachineRecord) throws -> MachineRecord {
        guard needsReconciling(record) else { return record }
        return try update(id: record.id) { current in
            guard needsReconciling(current) else { return }
            let wasStopping = current.state == .stopping
            let abandonedStart = current.state == .starting && current.pid == nil
            current.pid = nil
            if wasStopping {
                current.state = .stopped
            } else {
                current.state = .failed
                current.failure = abandonedStart
                    ? "stasis was interrupted while starting the machine"
                    : "the QEMU process exited unexpectedly. Console log tail:\n" + consoleTail(current.id)
            }
        }
    }

    private func needsReconciling(_ record: MachineRecord) -> Bool {
        guard record.state.hasProcess else { return false }
        if let pid = record.pid { return !engine.isAlive(pid: pid, machineID: record.id) }
        // Starting without a pid yet: only a start that began long ago was abandoned.
        return record.state != .starting || -(record.started ?? record.created).timeIntervalSinceNow > 600
    }

    /// Reads, changes and writes one machine's record under that machine's lock, so that two
    /// stasis processes never lose each other's changes.
    @discardableResult
    public func update(id: String, _ change: (inout MachineRecord) throws -> Void) throws -> MachineRecord {
        let paths = MachinePaths(home: home, id: id)
        return try FileLock.withLock(paths.lock) {
            var record = try load(id: id)
            try change(&record)
            try save(record)
            return record
        }
    }

    /// The last lines of a machine's console log.
    public func consoleTail(_ id: String, lines: Int = 15) -> String {
        let url = MachinePaths(home: home, id: id).console
        guard let data = try? Data(contentsOf: url) else { return "(no console log)" }
        let text = String(decoding: data.suffix(16384), as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    /// Deletes a machine's record and run folder. The caller makes sure no process is left.
    public func delete(id: String) throws {
        try FileLock.withLock(lockURL) {
            let paths = MachinePaths(home: home, id: id)
            // A lazily restored machine's memory server normally unmounts when QEMU quits; one
            // still mounted (killed, or slow) is detached so the folder can go.
            try MountPoint.detach(paths.memoryMount)
            // Rename first so a crash halfway never leaves a half-deleted machine listed.
            let trash = home.tmp.appendingPathComponent("rm-\(id)-\(UInt32.random(in: 0 ... .max))")
            try FileManager.default.createDirectory(at: home.tmp, withIntermediateDirectories: true)
            try AtomicFile.rename(paths.directory, over: trash)
            try? FileManager.default.removeItem(at: trash)
        }
    }

    static func newID(avoiding used: Set<String>) -> String {
        while true {
            let id = (0 ..< 6).map { _ in String(format: "%02x", UInt8.random(in: 0 ... 255)) }.joined()
            if !used.contains(where: { $0.hasPrefix(id) || id.hasPrefix($0) }) { return id }
        }
    }

    static func generatedName(avoiding used: Set<String>) -> String {
        let adjectives = ["brave", "calm", "eager", "fond", "keen", "quiet", "swift", "bold", "warm", "wise", "lucid", "noble"]
        let nouns = ["otter", "heron", "lynx", "finch", "panda", "koala", "raven", "bison", "gecko", "ibis", "tapir", "wren"]
        while true {
            let name = "\(adjectives.randomElement() ?? "calm")-\(nouns.randomElement() ?? "otter")-\(Int.random(in: 10 ... 99))"
            if !used.contains(name) { return name }
        }
    }
}
