import Foundation
import Testing
@testable import Context

@Suite struct ContextTailTests {
    @Test func tailYieldsExistingRecordsThenWakesOnAppends() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        let log = temp.log
        for i in 1 ... 3 { try await log.append(NewRecord(session: "s", kind: .userMessage, body: "\(i)")) }
        var iterator = log.tail(session: "s", after: 1).makeAsyncIterator()
        #expect(try await iterator.next()?.seq == 2)
        #expect(try await iterator.next()?.seq == 3)
        // Nothing more yet: the reader waits until the writer below appends.
        async let next = iterator.next()
        try await log.append(NewRecord(session: "other", kind: .system, body: "{}"))
        try await log.append(NewRecord(session: "s", kind: .assistantMessage, body: "4"))
        let woken = try await next
        #expect(woken?.seq == 4)
        #expect(woken?.body == "4")
    }

    @Test func manyReadersEachSeeEveryRecordInOrder() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        let log = temp.log
        let total = 200
        try await withThrowingTaskGroup(of: [Int64].self) { group in
            for _ in 0 ..< 4 {
                group.addTask {
                    var seen: [Int64] = []
                    for try await record in log.tail(session: "s") {
                        seen.append(record.seq)
                        if seen.count == total { break }
                    }
                    return seen
                }
            }
            for i in 0 ..< total { try await log.append(NewRecord(session: "s", kind: .toolResult, body: "\(i)")) }
            for try await seen in group { #expect(seen == (1 ... Int64(total)).map { $0 }) }
        }
    }

    @Test func cancellingAWaitingReaderEndsIt() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        let log = temp.log
        let reader = Task { () -> Int in
            var count = 0
            for try await _ in log.tail(session: "quiet") { count += 1 }
            return count
        }
        reader.cancel()
        #expect(try await reader.value == 0)
    }

    @Test func tailStopsAtADamagedRecord() async throws {
        let temp = try TemporaryLog()
        defer { temp.cleanup() }
        for i in 1 ... 3 { try await temp.log.append(NewRecord(session: "s", kind: .userMessage, body: "\(i)")) }
        try temp.tamper("UPDATE records SET body = 'x' WHERE seq = 3")
        var seen: [Int64] = []
        await #expect(throws: (any Error).self) {
            for try await record in temp.log.tail(session: "s") { seen.append(record.seq) }
        }
        #expect(seen.isEmpty || seen == [1, 2])
    }
}
