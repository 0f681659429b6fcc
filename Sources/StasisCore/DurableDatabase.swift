import Foundation
import GRDB

/// The one way Stasis opens a SQLite database it relies on (the context log, the Replay journal):
/// WAL mode, and every commit fsynced before it returns.
public enum DurableDatabase {
    /// Opens (creating it and its folder if needed) the database at `url` and runs `migrator`.
    public static func open(at url: URL, migrator: DatabaseMigrator) throws -> DatabasePool {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let pool = try DatabasePool(path: url.path, configuration: config)
        // DatabasePool switches its writer to synchronous=NORMAL when it turns WAL on, after
        // prepareDatabase ran: without this, commits are not fsynced (only checkpoints are), and
        // a record reported as saved could be lost in a power cut.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        try migrator.migrate(pool)
        return pool
    }
}
