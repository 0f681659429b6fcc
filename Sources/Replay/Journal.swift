import Foundation
import GRDB
import StasisCore

/// The SQLite journal of workflows and their events (WAL, synchronous=FULL). Events are append-only:
/// the schema's triggers refuse any update or delete.
final class Journal: Sendable {
    let url: URL
    private let db: DatabasePool

    /// Opens (creating if needed) the journal at `url`.
    init(url: URL) throws {
        self.url = url
        do {
            db = try DurableDatabase.open(at: url, migrator: Self.migrator)
        } catch {
            throw StasisError(.ioFailure, "cannot open the replay journal \(url.path)", cause: error)
        }
    }

    private static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE workflows (
                    id TEXT NOT NULL,
                    run INTEGER NOT NULL,
                    name TEXT NOT NULL,
                    input TEXT NOT NULL,
                    status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'continuedAsNew')),
                    result TEXT,
                    created REAL NOT NULL,
                    updated REAL NOT NULL,
                    PRIMARY KEY (id, run)
                );
                CREATE INDEX workflows_status ON workflows(status);
                CREATE TABLE events (
                    workflow_id TEXT NOT NULL,
                    run INTEGER NOT NULL,
                    seq INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    step TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    time REAL NOT NULL,
                    checksum TEXT NOT NULL,
                    PRIMARY KEY (workflow_id, run, seq)
                );
                CREATE TRIGGER events_no_update BEFORE UPDATE ON events
                    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
                CREATE TRIGGER events_no_delete BEFORE DELETE ON events
                    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
                """)
        }
        return m
    }

    /// The SQLite pragma value of the connection that writes (the one whose settings decide
    /// durability), for tests.
    func pragma(_ name: String) throws -> String? {
        try db.writeWithoutTransaction { db in try String.fetchOne(db, sql: "PRAGMA \(name)") }
    }

    /// The latest run of workflow `id`, or nil.
    func latestRun(_ id: String) throws -> WorkflowRecord? {
        try wrap("read workflow \(id)") {
            try db.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM workflows WHERE id = ? ORDER BY run DESC LIMIT 1", arguments: [id]).map(Self.record)
            }
        }
    }

    /// Every run of workflow `id`, oldest first.
    func runs(_ id: String) throws -> [WorkflowRecord] {
        try wrap("read workflow \(id)") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM workflows WHERE id = ? ORDER BY run", arguments: [id]).map(Self.record)
            }
        }
    }

    /// The latest runs that are still running.
    func unfinished() throws -> [WorkflowRecord] {
        try wrap("list unfinished workflows") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM workflows WHERE status = 'running' ORDER BY created, id").map(Self.record)
            }
        }
    }

    /// Creates run 1 of a workflow.
    func create(id: String, name: String, input: String) throws {
        try wrap("create workflow \(id)") {
            try db.write { db in
                let now = Date().timeIntervalSince1970
                try db.execute(
                    sql: "INSERT INTO workflows (id, run, name, input, status, result, created, updated) VALUES (?, 1, ?, ?, 'running', NULL, ?, ?)",
                    arguments: [id, name, input, now, now])
            }
        }
    }

    /// Sets a run's final status and result.
    func finish(id: String, run: Int, status: WorkflowStatus, result: String?) throws {
        try wrap("finish workflow \(id)") {
            try db.write { db in
                try db.execute(
                    sql: "UPDATE workflows SET status = ?, result = ?, updated = ? WHERE id = ? AND run = ?",
                    arguments: [status.rawValue, result, Date().timeIntervalSince1970, id, run])
            }
        }
    }

    /// In one transaction: journals the continuedAsNew event, closes the run, opens run + 1 with `input`.
    func continueAsNew(id: String, run: Int, seq: Int, name: String, input: String) throws {
        try wrap("continue workflow \(id) as new") {
            try db.write { db in
                let now = Date()
                try Self.insert(db, JournalEvent(
                    workflowID: id, run: run, seq: seq, kind: .continuedAsNew, step: "continueAsNew", payload: input, time: now,
                    checksum: JournalEvent.checksum(workflowID: id, run: run, seq: seq, kind: .continuedAsNew, step: "continueAsNew", payload: input)))
                try db.execute(
                    sql: "UPDATE workflows SET status = 'continuedAsNew', updated = ? WHERE id = ? AND run = ?",
                    arguments: [now.timeIntervalSince1970, id, run])
                try db.execute(
                    sql: "INSERT INTO workflows (id, run, name, input, status, result, created, updated) VALUES (?, ?, ?, ?, 'running', NULL, ?, ?)",
                    arguments: [id, run + 1, name, input, now.timeIntervalSince1970, now.timeIntervalSince1970])
            }
        }
    }

    /// Appends one event; fails if its position is already taken.
    func append(_ event: JournalEvent) throws {
        try wrap("journal event \(event.seq) of workflow \(event.workflowID)") {
            try db.write { db in try Self.insert(db, event) }
        }
    }

    /// The events of one run, in order; throws if one fails its checksum.
    func events(_ id: String, run: Int) throws -> [JournalEvent] {
        let events = try wrap("read events of workflow \(id)") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM events WHERE workflow_id = ? AND run = ? ORDER BY seq", arguments: [id, run])
                    .map { row -> JournalEvent in
                        let kindText: String = row["kind"]
                        guard let kind = JournalEvent.Kind(rawValue: kindText) else {
                            throw StasisError(.corrupted, "event \(row["seq"] as Int) of workflow \(id) has unknown kind \(kindText)")
                        }
                        return JournalEvent(
                            workflowID: row["workflow_id"], run: row["run"], seq: row["seq"], kind: kind, step: row["step"],
                            payload: row["payload"], time: Date(timeIntervalSince1970: row["time"]), checksum: row["checksum"])
                    }
            }
        }
        for event in events where !event.isIntact {
            throw StasisError(.corrupted, "event \(event.seq) of workflow \(id) run \(run) fails its checksum")
        }
        return events
    }

    private static func insert(_ db: Database, _ e: JournalEvent) throws {
        try db.execute(
            sql: "INSERT INTO events (workflow_id, run, seq, kind, step, payload, time, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: [e.workflowID, e.run, e.seq, e.kind.rawValue, e.step, e.payload, e.time.timeIntervalSince1970, e.checksum])
    }

    private static func record(_ row: Row) throws -> WorkflowRecord {
        let statusText: String = row["status"]
        guard let status = WorkflowStatus(rawValue: statusText) else {
            throw StasisError(.corrupted, "workflow \(row["id"] as String) has unknown status \(statusText)")
        }
        return WorkflowRecord(
            id: row["id"], run: row["run"], name: row["name"], input: row["input"], status: status, result: row["result"],
            created: Date(timeIntervalSince1970: row["created"]), updated: Date(timeIntervalSince1970: row["updated"]))
    }

    private func wrap<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StasisError { throw error } catch {
            throw StasisError(.ioFailure, "cannot \(what) in \(url.path)", cause: error)
        }
    }
}
