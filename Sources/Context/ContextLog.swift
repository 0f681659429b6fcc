import Foundation
import GRDB
import StasisCore

/// The append-only log of agent sessions: SQLite in WAL mode through GRDB, `synchronous=FULL`, so a
/// record is on disk when `append` returns. Records are never updated or deleted (the schema's
/// triggers refuse it); each carries a checksum chained to the one before it, and every read checks
/// the chain, so a damaged record is reported, never served.
public final class ContextLog: Sendable {
    /// The database file.
    public let url: URL
    let db: DatabasePool
    let signal = AppendSignal()
    let committer: GroupCommitter

    /// Opens (creating if needed) the log at `url`.
    public init(url: URL) throws {
        self.url = url
        do {
            db = try DurableDatabase.open(at: url, migrator: Self.migrator)
        } catch {
            throw StasisError(.ioFailure, "cannot open the context log \(url.path)", cause: error)
        }
        committer = GroupCommitter()
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            // A rowid table, not WITHOUT ROWID: the latter keeps at most about 1 KB of a row in its
            // B-tree page (with 4 KiB pages) and puts the rest of a tool result on an overflow page
            // of its own, mostly empty. For an agent session that made the file 1.6 times larger
            // (stasis-bench context: 6.9 KB a turn against 4.4 KB). The primary key is then a
            // unique index.
            // Logs created with WITHOUT ROWID keep it; the queries are the same for both.
            try db.execute(sql: """
                CREATE TABLE records (
                    session TEXT NOT NULL,
                    seq INTEGER NOT NULL CHECK (seq > 0),
                    kind TEXT NOT NULL,
                    body TEXT NOT NULL,
                    time INTEGER NOT NULL,
                    checksum TEXT NOT NULL,
                    PRIMARY KEY (session, seq)
                );
                CREATE TRIGGER records_no_update BEFORE UPDATE ON records
                    BEGIN SELECT RAISE(ABORT, 'context records are append-only'); END;
                CREATE TRIGGER records_no_delete BEFORE DELETE ON records
                    BEGIN SELECT RAISE(ABORT, 'context records are append-only'); END;
                """)
        }
        return migrator
    }

    // MARK: Appending

    /// Appends one record and returns it once it is durable. Concurrent appends (from any session)
    /// are committed together in one transaction: one fsync for many records.
    @discardableResult
    public func append(_ record: NewRecord) async throws -> ContextRecord {
        try await committer.submit(record, to: self)
    }

    /// Appends one record whose body is `value` as JSON.
    @discardableResult
    public func append<T: Encodable & Sendable>(session: String, kind: RecordKind, value: T) async throws -> ContextRecord {
        try await append(NewRecord(session: session, kind: kind, value: value))
    }

    /// Appends records in one transaction, in order; all or none are written.
    @discardableResult
    public func append(contentsOf records: [NewRecord]) throws -> [ContextRecord] {
        let written = try wrap("append \(records.count) records") {
            try db.write { db in try Self.insert(records, into: db) }
        }
        signal.signal(records.map(\.session))
        return written
    }

    /// Inserts `records` after each session's last record, checking that last record first.
    static func insert(_ records: [NewRecord], into db: Database) throws -> [ContextRecord] {
        var heads: [String: (seq: Int64, checksum: String)] = [:]
        var written: [ContextRecord] = []
        written.reserveCapacity(records.count)
        let statement = try db.cachedStatement(
            sql: "INSERT INTO records (session, seq, kind, body, time, checksum) VALUES (?, ?, ?, ?, ?, ?)")
        for record in records {
            guard !record.session.isEmpty else {
                throw StasisError(.invalidArgument, "a context record needs a session id")
            }
            let head: (seq: Int64, checksum: String)
            if let known = heads[record.session] {
                head = known
            } else {
                head = try verifiedHead(record.session, in: db)
            }
            let seq = head.seq + 1
            let time = Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())
            let checksum = RecordChecksum.compute(
                session: record.session, seq: seq, kind: record.kind, timeMicros: time, body: record.body, previous: head.checksum)
            try statement.execute(arguments: [record.session, seq, record.kind.rawValue, record.body, time, checksum])
            let appended = ContextRecord(
                session: record.session, seq: seq, kind: record.kind, body: record.body, timeMicros: time, checksum: checksum)
            heads[record.session] = (seq, checksum)
            written.append(appended)
        }
        return written
    }

    /// The last sequence number and checksum of `session` (0 and "" if empty), after checking that
    /// the last record is intact: nothing is ever chained onto a damaged tail.
    private static func verifiedHead(_ session: String, in db: Database) throws -> (seq: Int64, checksum: String) {
        let rows = try Row.fetchAll(
            db, sql: "SELECT * FROM records WHERE session = ? ORDER BY seq DESC LIMIT 2", arguments: [session])
        guard let lastRow = rows.first else { return (0, "") }
        let last = try record(lastRow)
        let previous = try rows.dropFirst().first.map(record)
        try check(last, previous: previous)
        return (last.seq, last.checksum)
    }

    // MARK: Reading

    /// The records of `session` after `seq`, oldest first, at most `limit`; throws `.corrupted`
    /// naming the first record that fails its checksum.
    public func records(session: String, after seq: Int64 = 0, limit: Int? = nil) throws -> [ContextRecord] {
        try wrap("read session \(session)") {
            try db.read { db in
                // Read one record before the range: its checksum is the first record's chain input.
                let rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM records WHERE session = ? AND seq >= ? ORDER BY seq LIMIT ?",
                    arguments: [session, max(seq, 1), limit.map { $0 + (seq > 0 ? 1 : 0) } ?? -1])
                var previous: ContextRecord?
                var out: [ContextRecord] = []
                for row in rows {
                    let current = try Self.record(row)
                    if current.seq > seq {
                        if current.seq > 1, previous == nil {
                            throw StasisError(.corrupted, "the context log of session \(session) is missing record \(current.seq - 1)")
                        }
                        try Self.check(current, previous: previous)
                        out.append(current)
                    }
                    previous = current
                }
                return out
            }
        }
    }

    /// The sequence number of the session's last record (0 for an unknown session).
    public func lastSeq(session: String) throws -> Int64 {
        try wrap("read session \(session)") {
            try db.read { db in
                try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM records WHERE session = ?", arguments: [session]) ?? 0
            }
        }
    }

    /// The last record of `kind` in `session`, checked against its predecessor.
    public func lastRecord(session: String, kind: RecordKind) throws -> ContextRecord? {
        try wrap("read session \(session)") {
            try db.read { db in
                guard let row = try Row.fetchOne(
                    db, sql: "SELECT * FROM records WHERE session = ? AND kind = ? ORDER BY seq DESC LIMIT 1",
                    arguments: [session, kind.rawValue])
                else { return nil }
                let found = try Self.record(row)
                let previous = try Row.fetchOne(
                    db, sql: "SELECT * FROM records WHERE session = ? AND seq = ?", arguments: [session, found.seq - 1]
                ).map(Self.record)
                try Self.check(found, previous: previous)
                return found
            }
        }
    }

    /// Every session id in the log with its record count, oldest session first.
    public func sessions() throws -> [(session: String, lastSeq: Int64)] {
        try wrap("list sessions") {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT session, MAX(seq) AS last, MIN(time) AS first FROM records GROUP BY session ORDER BY first, session")
                    .map { ($0["session"], $0["last"]) }
            }
        }
    }

    /// Checks the whole chain of `session`; returns the number of records.
    @discardableResult
    public func verify(session: String) throws -> Int {
        try records(session: session).count
    }

    /// The size of the database and its WAL, in bytes.
    public func storedBytes() -> Int64 {
        [url.path, url.path + "-wal"].reduce(Int64(0)) { total, path in
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? 0
            return total + size
        }
    }

    // MARK: Helpers

    static func record(_ row: Row) throws -> ContextRecord {
        let session: String = row["session"]
        let seq: Int64 = row["seq"]
        let kindText: String = row["kind"]
        guard let kind = RecordKind(rawValue: kindText) else {
            throw StasisError(.corrupted, "record \(seq) of session \(session) has an unknown kind '\(kindText)'")
        }
        return ContextRecord(session: session, seq: seq, kind: kind, body: row["body"], timeMicros: row["time"], checksum: row["checksum"])
    }

    static func check(_ record: ContextRecord, previous: ContextRecord?) throws {
        if let previous, previous.seq != record.seq - 1 {
            throw StasisError(.corrupted, "the context log of session \(record.session) is missing record \(record.seq - 1)")
        }
        guard RecordChecksum.isIntact(record, previous: previous?.checksum ?? "") else {
            throw StasisError(
                .corrupted,
                "record \(record.seq) of session \(record.session) fails its checksum: the context log is damaged there; "
                    + "records before it are intact")
        }
    }

    func wrap<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as StasisError { throw error } catch {
            throw StasisError(.ioFailure, "cannot \(what) in the context log \(url.path)", cause: error)
        }
    }
}
