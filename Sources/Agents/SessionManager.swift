import Context
import Foundation
import Images
import Machines
import Models
import StasisCore

/// Every session of one stasis home: creates, finds, forks and deletes them, and picks them up
/// again from the log when stasis starts.
public actor SessionManager {
    /// What the sessions share.
    public nonisolated let environment: SessionEnvironment
    private var sessions: [String: Session] = [:]
    private var started = false
    /// Held while this manager runs: two managers on one home would run one session twice.
    private var ownership: FileLock?

    public init(environment: SessionEnvironment) {
        self.environment = environment
    }

    /// Loads every session from the log and recovers those a crash interrupted. Call once.
    public func start() async throws {
        guard !started else { return }
        let lockFile = environment.home.root.appendingPathComponent("sessions.lock")
        try FileManager.default.createDirectory(at: environment.home.root, withIntermediateDirectories: true)
        guard let lock = try FileLock.tryAcquire(lockFile) else {
            throw StasisError(.alreadyExists, "another stasis process manages the sessions of \(environment.home.root.path) (\(lockFile.path) is locked): stop it first, or use another STASIS_HOME")
        }
        ownership = lock
        started = true
        for (id, _) in try environment.log.sessions() {
            guard let session = try load(id) else { continue }
            sessions[id] = session
        }
        for session in sessions.values {
            do { try await session.recover() } catch {
                environment.logger.error("session \(session.id): recovery failed: \(error)")
            }
        }
    }

    /// Creates a session; its machine boots with the first message.
    public func create(_ configuration: SessionConfiguration) async throws -> SessionInfo {
        try await validate(configuration)
        let id = Self.newID()
        let session = try makeSession(id: id, configuration: configuration, parent: nil, state: .new, machine: nil, snapshot: nil)
        try await environment.log.append(
            NewRecord(session: id, kind: .system, value: SystemEventBody("created", state: .new, configuration: configuration)))
        sessions[id] = session
        return try await session.info()
    }

    /// The session with this id or unique id prefix.
    public func session(_ reference: String) throws -> Session {
        if let exact = sessions[reference], exact.isListed { return exact }
        let matches = sessions.filter { $0.key.hasPrefix(reference) && $0.value.isListed }
        guard !reference.isEmpty, matches.count == 1, let match = matches.first else {
            if matches.count > 1 {
                throw StasisError(.invalidArgument, "session id prefix '\(reference)' matches \(matches.count) sessions: give more of the id")
            }
            throw StasisError(.notFound, "no session '\(reference)': `stasis session ls` lists them")
        }
        return match.value
    }

    /// Every session that is not deleted, oldest first.
    public func list() async throws -> [SessionInfo] {
        var infos: [SessionInfo] = []
        for session in sessions.values where session.isListed {
            let info = try await session.info()
            if info.state != .deleted { infos.append(info) }
        }
        return infos.sorted { $0.id < $1.id }
    }

    /// A new session with this session's log up to now and a fork of its machine; with `turn`,
    /// the log up to the end of that turn (1-based) and the machine as that turn left it: a
    /// rewind that keeps the original session as it is.
    public func fork(_ reference: String, atTurn turn: Int? = nil) async throws -> SessionInfo {
        let source = try session(reference)
        let id = Self.newID()
        // Counted in flight until the new session holds the snapshot's id.
        return try await environment.snapshotsInFlight.during {
            if let turn {
                let (snapshot, seq) = try await source.checkpoint(atTurn: turn)
                return try await fork(source, as: id, snapshot: snapshot, seq: seq, at: "turn \(turn)")
            }
            let (snapshot, seq) = try await source.snapshotForFork(tag: "session-\(id)")
            return try await fork(source, as: id, snapshot: snapshot, seq: seq, at: "record \(seq)")
        }
    }

    private func fork(_ source: Session, as id: String, snapshot: String?, seq: Int64, at point: String) async throws -> SessionInfo {
        let copied = try environment.log.records(session: source.id, after: 0, limit: Int(seq))
            .filter { $0.kind != .system }
        var records: [NewRecord] = [try NewRecord(session: id, kind: .system, value: SystemEventBody(
            "forked", state: .new, configuration: source.configuration, snapshot: snapshot, parent: source.id, parentSeq: seq))]
        records += copied.map { NewRecord(session: id, kind: $0.kind, body: $0.body) }
        let state: SessionState = snapshot == nil ? .new : .suspended
        records.append(try NewRecord(session: id, kind: .system, value: SystemEventBody(
            "suspended", state: state, snapshot: snapshot, message: "forked from \(source.id) at \(point)")))
        let session = try makeSession(id: id, configuration: source.configuration, parent: source.id, state: state,
                                      machine: nil, snapshot: snapshot)
        try environment.log.append(contentsOf: records)
        sessions[id] = session
        return try await session.info()
    }

    /// Deletes a session: its machine stops, snapshots no other session uses go; its log stays.
    public func delete(_ reference: String) async throws {
        let target = try session(reference)
        try await target.delete()
        target.unlist()
        await sweepSnapshots()
    }

    /// Stops every session's idle timer; with `suspending`, idle machines are snapshotted first.
    public func shutdown(suspending: Bool) async {
        for session in sessions.values { await session.shutdown(suspending: suspending) }
    }

    /// Deletes session snapshots that no session needs any more: not the newest of a live
    /// session, and nothing (a machine, a later snapshot) built on them. Newest first, so a chain
    /// comes undone from its tip; a snapshot that still has dependents stays for a later sweep.
    public func sweepSnapshots() async {
        guard !environment.snapshotsInFlight.busy else { return }
        var needed = Set<String>()
        for session in sessions.values where session.isListed {
            if let snapshot = await session.snapshotID { needed.insert(snapshot) }
            needed.formUnion(await session.checkpoints.values)
        }
        let store = environment.snapshotter.snapshots
        while !environment.snapshotsInFlight.busy {
            guard let all = try? store.list(), let machines = try? environment.machines.list() else { return }
            let unneeded = all.filter { $0.tag?.hasPrefix("session-") == true && !needed.contains($0.id) }
                .sorted { $0.created > $1.created }
            var removed = false
            for manifest in unneeded {
                do {
                    try await store.remove(manifest.id, force: false, machines: machines)
                    removed = true
                } catch {
                    environment.logger.debug("kept snapshot \(manifest.id) for now: \(error)")
                }
            }
            if !removed { return }
            // Their RAM frames that no other snapshot shares are freed now, not at the next `stasis gc`.
            let records = environment.machines
            _ = try? await runBlocking { try store.collectGarbage(machines: { try records.list() }, dropCaches: false) }
        }
        // A snapshot in flight: the next sweep (after the next suspend or delete) finishes the job.
    }

    private func load(_ id: String) throws -> Session? {
        guard let first = try environment.log.records(session: id, limit: 1).first,
              first.kind == .system,
              let origin = try? first.decodeBody(SystemEventBody.self),
              let configuration = origin.configuration
        else {
            environment.logger.warning("log session \(id) does not start with its configuration; skipped")
            return nil
        }
        guard let last = try environment.log.lastRecord(session: id, kind: .system) else { return nil }
        let current = try last.decodeBody(SystemEventBody.self)
        if current.state == .deleted { return nil }
        // Turn snapshots are kept (and spared by the sweep) for as long as the session is.
        var checkpoints: [String: String] = [:]
        for record in try environment.log.records(session: id) where record.kind == .system {
            if let body = try? record.decodeBody(SystemEventBody.self), body.event == "checkpointed",
               let turn = body.turn, let snapshot = body.checkpoint {
                checkpoints[turn] = snapshot
            }
        }
        return try makeSession(id: id, configuration: configuration, parent: origin.parent, state: current.state,
                               machine: current.machine, snapshot: current.snapshot, checkpoints: checkpoints)
    }

    private func makeSession(id: String, configuration: SessionConfiguration, parent: String?, state: SessionState,
                             machine: String?, snapshot: String?, checkpoints: [String: String] = [:]) throws -> Session {
        try Session(
            id: id, configuration: configuration, parent: parent, state: state, machineName: machine, snapshotID: snapshot,
            checkpoints: checkpoints, environment: environment,
            snapshotsChanged: { [weak self] in await self?.sweepSnapshots() })
    }

    private func validate(_ configuration: SessionConfiguration) async throws {
        _ = try await ImageStore(home: environment.home).image(named: configuration.image)
        _ = try MachineSpec.parseMemory("\(configuration.memoryMiB)M")
        guard configuration.idleTimeoutSeconds > 0 else {
            throw StasisError(.invalidArgument, "the idle timeout must be more than 0 seconds")
        }
        guard configuration.outputLimitBytes >= 256 else {
            throw StasisError(.invalidArgument, "the tool output limit must be at least 256 bytes")
        }
        _ = try environment.makeModel(configuration.model)
    }

    private static func newID() -> String {
        String((0 ..< 12).map { _ in "0123456789abcdef".randomElement() ?? "0" })
    }
}
