import Foundation
import GRDB
import StasisCore
import Testing
@testable import Context

/// A log in a fresh temporary folder, removed by `cleanup()`.
struct TemporaryLog {
    let folder: URL
    let log: ContextLog

    init() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("stasis-context-\(UUID().uuidString)")
        log = try ContextLog(url: folder.appendingPathComponent("context.sqlite"))
    }

    /// Runs raw SQL on the database behind the log's back, as damage from outside would.
    func tamper(_ sql: String) throws {
        let queue = try DatabaseQueue(path: log.url.path)
        try queue.write { db in
            try db.execute(sql: "DROP TRIGGER IF EXISTS records_no_update; DROP TRIGGER IF EXISTS records_no_delete")
            try db.execute(sql: sql)
        }
    }

    func cleanup() { try? FileManager.default.removeItem(at: folder) }
}

@Suite struct ContextLogTests {
    @Test func appendsGetContiguousSequenceNumbersPerSession() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        for i in 1 ... 3 {
            let a = try await temp.log.append(NewRecord(session: "a", kind: .userMessage, body: "{\"n\":\(i)}"))
            #expect(a.seq == Int64(i))
        }
        let b = try await temp.log.append(NewRecord(session: "b", kind: .system, body: "{}"))
        #expect(b.seq == 1)
        let records = try temp.log.records(session: "a")
        #expect(records.map(\.seq) == [1, 2, 3])
        #expect(records.map(\.body) == ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"])
        #expect(try temp.log.records(session: "a", after: 1).map(\.seq) == [2, 3])
        #expect(try temp.log.records(session: "a", after: 1, limit: 1).map(\.seq) == [2])
        #expect(try temp.log.lastSeq(session: "a") == 3)
        #expect(try temp.log.lastSeq(session: "nobody") == 0)
        #expect(try temp.log.sessions().map(\.session) == ["a", "b"])
    }

    @Test func storesDurablyInWALWithFullSync() throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        // The writer's settings decide durability (GRDB's pool sets its own on the writer).
        let (mode, sync) = try temp.log.db.writeWithoutTransaction { db in
            (try String.fetchOne(db, sql: "PRAGMA journal_mode"), try Int.fetchOne(db, sql: "PRAGMA synchronous"))
        }
        #expect(mode == "wal")
        #expect(sync == 2)  // FULL
    }

    @Test func batchAppendIsOneTransactionInOrder() throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        let written = try temp.log.append(contentsOf: [
            NewRecord(session: "s", kind: .userMessage, body: "1"),
            NewRecord(session: "t", kind: .userMessage, body: "2"),
            NewRecord(session: "s", kind: .assistantMessage, body: "3"),
        ])
        #expect(written.map(\.seq) == [1, 1, 2])
        // A bad record fails the whole batch: nothing of it is written.
        #expect(throws: StasisError.self) {
            try temp.log.append(contentsOf: [NewRecord(session: "s", kind: .system, body: "4"), NewRecord(session: "", kind: .system, body: "5")])
        }
        #expect(try temp.log.lastSeq(session: "s") == 2)
    }

    @Test func recordsCannotBeUpdatedOrDeleted() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        try await temp.log.append(NewRecord(session: "s", kind: .userMessage, body: "{}"))
        let queue = try DatabaseQueue(path: temp.log.url.path)
        #expect(throws: (any Error).self) { try queue.write { try $0.execute(sql: "UPDATE records SET body = 'x'") } }
        #expect(throws: (any Error).self) { try queue.write { try $0.execute(sql: "DELETE FROM records") } }
        #expect(try temp.log.records(session: "s").map(\.body) == ["{}"])
    }

    @Test func concurrentAppendsAreGroupCommittedWithoutGaps() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        let log = temp.log
        try await withThrowingTaskGroup(of: Void.self) { group in
            for session in 0 ..< 16 {
                group.addTask {
                    for i in 0 ..< 25 {
                        try await log.append(NewRecord(session: "s\(session)", kind: .toolResult, body: "\(i)"))
                    }
                }
            }
            try await group.waitForAll()
        }
        for session in 0 ..< 16 {
            let records = try log.records(session: "s\(session)")
            #expect(records.map(\.seq) == Array(1 ... 25))
            #expect(records.map(\.body) == (0 ..< 25).map { "\($0)" })
        }
    }

    @Test func aChangedBodyIsReportedNotServed() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        for i in 1 ... 4 { try await temp.log.append(NewRecord(session: "s", kind: .userMessage, body: "\(i)")) }
        try temp.tamper("UPDATE records SET body = '20' WHERE seq = 2")
        let error = #expect(throws: StasisError.self) { try temp.log.records(session: "s") }
        #expect(error?.code == .corrupted)
        #expect(error?.message.contains("record 2 of session s") == true)
        // Reading before the damage still works.
        #expect(try temp.log.records(session: "s", limit: 1).map(\.body) == ["1"])
    }

    @Test func aDamagedTailIsNeverChainedOnto() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        for i in 1 ... 2 { try await temp.log.append(NewRecord(session: "s", kind: .userMessage, body: "\(i)")) }
        try temp.tamper("UPDATE records SET checksum = 'torn' WHERE seq = 2")
        let error = await #expect(throws: StasisError.self) {
            try await temp.log.append(NewRecord(session: "s", kind: .userMessage, body: "3"))
        }
        #expect(error?.code == .corrupted)
        #expect(try temp.log.lastSeq(session: "s") == 2)
        // Other sessions go on.
        #expect(try await temp.log.append(NewRecord(session: "other", kind: .system, body: "{}")).seq == 1)
    }

    @Test func aMissingRecordIsReported() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        for i in 1 ... 3 { try await temp.log.append(NewRecord(session: "s", kind: .userMessage, body: "\(i)")) }
        try temp.tamper("DELETE FROM records WHERE seq = 2")
        let error = #expect(throws: StasisError.self) { try temp.log.records(session: "s") }
        #expect(error?.message.contains("missing record 2") == true)
    }

    @Test func recordsAreChainedSoAReorderIsCaught() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        for i in 1 ... 3 { try await temp.log.append(NewRecord(session: "s", kind: .userMessage, body: "\(i)")) }
        // Swap two whole records (bodies and checksums): each is intact alone, the chain is not.
        try temp.tamper("""
            UPDATE records SET seq = 100 WHERE seq = 2; UPDATE records SET seq = 2 WHERE seq = 3; UPDATE records SET seq = 3 WHERE seq = 100;
            """)
        #expect(throws: StasisError.self) { try temp.log.records(session: "s") }
    }

    @Test func encodableBodiesAreSortedJSON() async throws {
        struct Message: Codable, Equatable { let text: String; let author: String }
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        let record = try await temp.log.append(session: "s", kind: .userMessage, value: Message(text: "hi/there", author: "me"))
        #expect(record.body == #"{"author":"me","text":"hi/there"}"#)
        #expect(try record.decodeBody(Message.self) == Message(text: "hi/there", author: "me"))
    }

    @Test func survivesReopening() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        try await temp.log.append(NewRecord(session: "s", kind: .userMessage, body: "1"))
        let reopened = try ContextLog(url: temp.log.url)
        #expect(try await reopened.append(NewRecord(session: "s", kind: .userMessage, body: "2")).seq == 2)
        #expect(try reopened.verify(session: "s") == 2)
    }
}
