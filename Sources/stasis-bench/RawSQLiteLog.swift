import Context
import Foundation
import GRDB
import Synchronization

/// The baseline of the context benchmark: the same rows in the same SQLite setup as `ContextLog`
/// (WAL through a GRDB `DatabasePool`, `synchronous=FULL`, the same table less the checksum
/// column), but no checksum, no read of the session's last record before appending, and no group
/// commit: each single append is its own transaction, as plain SQLite gives it.
final class RawSQLiteLog: AppendTarget {
    let db: DatabasePool
    /// The next sequence number per session, kept in memory instead of read back.
    private let heads = Mutex<[String: Int64]>([:])

    init(url: URL) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        db = try DatabasePool(path: url.path, configuration: config)
        // DatabasePool sets its writer to synchronous=NORMAL when it turns WAL on, after
        // prepareDatabase: set FULL again, as ContextLog does, or commits are not fsynced.
        try db.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        try db.write { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS records (
                    session TEXT NOT NULL,
                    seq INTEGER NOT NULL CHECK (seq > 0),
                    kind TEXT NOT NULL,
                    body TEXT NOT NULL,
                    time INTEGER NOT NULL,
                    PRIMARY KEY (session, seq)
                )
                """)
        }
    }

    func appendOne(_ record: NewRecord) async throws {
        try await db.write { db in try self.insert([record], into: db) }
    }

    func appendBatch(_ records: [NewRecord]) throws {
        try db.write { db in try insert(records, into: db) }
    }

    private func insert(_ records: [NewRecord], into db: Database) throws {
        let statement = try db.cachedStatement(sql: "INSERT INTO records (session, seq, kind, body, time) VALUES (?, ?, ?, ?, ?)")
        for record in records {
            let seq = heads.withLock { heads -> Int64 in
                let next = heads[record.session, default: 0] + 1
                heads[record.session] = next
                return next
            }
            let time = Int64((Date().timeIntervalSince1970 * 1_000_000).rounded())
            try statement.execute(arguments: [record.session, seq, record.kind.rawValue, record.body, time])
        }
    }
}
