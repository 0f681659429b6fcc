import Context
import Foundation
import GRDB

/// Storage of one long agent session in the context log, measured at a few turn counts.
enum ContextStorage {
    /// Appends `session`'s turns to a fresh log in `folder`, one transaction per turn (the rows are
    /// what single appends would write), and measures the log's size empty and at each of `points`.
    static func measure(_ session: SyntheticSession, points: [Int], folder: URL) throws -> (points: [StoragePoint], readMilliseconds: Summary) {
        let url = folder.appendingPathComponent("storage.sqlite")
        let log = try ContextLog(url: url)
        try checkpoint(url)
        var out = [StoragePoint(turn: 0, bytes: log.storedBytes(), payloadBytes: 0)]
        var payload: Int64 = 0
        for turn in 0 ..< (points.max() ?? 0) {
            let records = try session.records(turn: turn, session: "storage")
            payload += records.reduce(0) { $0 + Int64($1.body.utf8.count) }
            try log.append(contentsOf: records)
            if points.contains(turn + 1) {
                try checkpoint(url)
                out.append(StoragePoint(turn: turn + 1, bytes: log.storedBytes(), payloadBytes: payload))
            }
        }
        // Session's turn loop reads the whole log before every model call: time that read (with the
        // checksum check of every record) at the session's full length.
        let clock = ContinuousClock()
        var reads: [Double] = []
        for _ in 0 ..< 5 {
            let t0 = clock.now
            _ = try log.records(session: "storage")
            reads.append((clock.now - t0).milliseconds)
        }
        return (out, Summary(reads))
    }

    /// Folds the WAL into the database and truncates it, so the size counts each page once.
    static func checkpoint(_ url: URL) throws {
        let queue = try DatabaseQueue(path: url.path)
        let row = try queue.writeWithoutTransaction { db in try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        if let busy: Int = row?[0], busy != 0 {
            progress("warning: the WAL checkpoint of \(url.lastPathComponent) was blocked; its size includes the WAL")
        }
    }
}
