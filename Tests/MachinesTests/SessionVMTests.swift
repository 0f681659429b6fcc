import Agents
import Context
import Foundation
@testable import Machines
import Snapshots
import StasisCore
import Testing

/// Agent sessions on real machines with the scripted model: turns, tools, suspend on idle,
/// restore on message, fork, delete.
@Suite("sessions", .serialized, .timeLimit(.minutes(10)))
struct SessionVMTests {
    @Test func turnSuspendOnIdleRestoreOnMessageForkAndDelete() async throws {
        let harness = try await SessionHarness.make()
        let session = try await harness.manager.create(SessionConfiguration(image: "bb", memoryMiB: 256, idleTimeoutSeconds: 1))
        let id = session.id
        let target = try await harness.manager.session(id)

        // Turn 1 boots the machine and runs one shell call.
        _ = try await target.sendAndWait("please\n$ echo hello > /root/f; cat /root/f")
        var records = try harness.log.records(session: id)
        #expect(records.map(\.kind) == [.system, .userMessage, .system, .system, .system, .assistantMessage, .toolCall,
                                        .toolResult, .assistantMessage, .system, .system])
        #expect(systemEvents(records).map(\.event) == ["created", "booting", "booted", "turnStarted", "turnEnded", "checkpointed"])
        let first = try #require(toolResults(records).first)
        #expect(first.content.contains("hello"))
        #expect(first.content.contains("[exit code 0]"))
        #expect(!first.isError)

        // Idle for a second: the machine is snapshotted and stopped.
        let suspended = try await awaitRecord(harness.log, id, after: records.last?.seq ?? 0, isEvent("suspended"))
        let suspendedBody = try suspended.decodeBody(SystemEventBody.self)
        let snapshot = try #require(suspendedBody.snapshot)
        #expect((suspendedBody.snapshotBytes ?? 0) > 0)
        #expect(await target.state == .suspended)
        let env = try await VMFixture.shared.env()
        #expect(try env.store.list().filter { $0.name == "session-\(id)" }.isEmpty, "no machine is left while suspended")

        // Turn 2 restores it: the file written in turn 1 is there.
        _ = try await target.sendAndWait("$ cat /root/f")
        records = try harness.log.records(session: id, after: suspended.seq)
        #expect(systemEvents(records).map(\.event).prefix(3) == ["restoring", "restored", "turnStarted"])
        #expect(toolResults(records).first?.content.hasPrefix("hello") == true)

        // A fork has the log so far and its own copy of the machine.
        let forked = try await harness.manager.fork(id)
        #expect(forked.parent == id)
        let forkRecords = try harness.log.records(session: forked.id)
        #expect(forkRecords.filter { $0.kind == .userMessage }.count == 2)
        let fork = try await harness.manager.session(forked.id)
        _ = try await fork.sendAndWait("$ cat /root/f; echo fork > /root/f")
        _ = try await target.sendAndWait("$ cat /root/f")
        let forkSaw = toolResults(try harness.log.records(session: forked.id)).last?.content ?? ""
        let originalSaw = toolResults(try harness.log.records(session: id)).last?.content ?? ""
        #expect(forkSaw.hasPrefix("hello"))
        #expect(originalSaw.hasPrefix("hello"), "the fork's write did not reach the original")

        // Delete: machines gone, not listed, the log kept; the snapshot goes once nothing uses it.
        try await harness.manager.delete(forked.id)
        try await harness.manager.delete(id)
        #expect(try await harness.manager.list().allSatisfy { $0.id != id && $0.id != forked.id })
        #expect(try env.store.list().filter { $0.name.hasPrefix("session-\(id)") || $0.name.hasPrefix("session-\(forked.id)") }.isEmpty)
        #expect(systemEvents(try harness.log.records(session: id)).last?.event == "deleted")
        #expect(throws: StasisError.self) { try SnapshotStore(home: env.home).manifest(snapshot) }
    }

    /// Rewind: every turn leaves a snapshot, and a fork at turn N has the log up to that turn and
    /// the machine (disk and RAM) as that turn left it, while the original goes on unchanged.
    @Test func forkAtAnEarlierTurnRewindsLogAndMachine() async throws {
        let harness = try await SessionHarness.make()
        let session = try await harness.newSession()
        let id = session.id
        _ = try await session.sendAndWait("$ echo one > /root/f")
        _ = try await session.sendAndWait("$ echo two > /root/f; echo in-ram > /tmp/ram")
        _ = try await session.sendAndWait("$ cat /root/f")
        let records = try harness.log.records(session: id)
        let checkpoints = systemEvents(records).filter { $0.event == "checkpointed" }.compactMap(\.checkpoint)
        #expect(checkpoints.count == 3 && Set(checkpoints).count == 3, "one snapshot per turn: \(checkpoints)")
        #expect(await session.state == .idle, "the machine kept running through its turn snapshots")

        let rewound = try await harness.manager.fork(id, atTurn: 1)
        #expect(rewound.parent == id && rewound.snapshot == checkpoints[0])
        let rewoundRecords = try harness.log.records(session: rewound.id)
        #expect(rewoundRecords.filter { $0.kind == .userMessage }.count == 1, "the log up to turn 1")
        let fork = try await harness.manager.session(rewound.id)
        _ = try await fork.sendAndWait("$ cat /root/f; cat /tmp/ram 2>/dev/null || echo no-ram")
        let saw = toolResults(try harness.log.records(session: rewound.id)).last?.content ?? ""
        #expect(saw.hasPrefix("one\nno-ram"), "disk and RAM as turn 1 left them: \(saw)")
        _ = try await session.sendAndWait("$ cat /root/f /tmp/ram")
        let originalSaw = toolResults(try harness.log.records(session: id)).last?.content ?? ""
        #expect(originalSaw.hasPrefix("two\nin-ram"), "the original goes on: \(originalSaw)")

        // Turns that do not exist, or ran in the parent, are refused by name.
        let missing = await #expect(throws: StasisError.self) { try await harness.manager.fork(id, atTurn: 9) }
        #expect(missing?.description.contains("has 4 turns") == true, "\(String(describing: missing))")
        let inherited = await #expect(throws: StasisError.self) { try await harness.manager.fork(rewound.id, atTurn: 1) }
        #expect(inherited?.description.contains("ran in session \(id)") == true, "\(String(describing: inherited))")

        // A sweep keeps every turn's snapshot of a live session; deleting the sessions frees them.
        let env = try await VMFixture.shared.env()
        await harness.manager.sweepSnapshots()
        for snapshot in checkpoints { #expect(throws: Never.self) { try SnapshotStore(home: env.home).manifest(snapshot) } }
        try await harness.manager.delete(rewound.id)
        try await harness.manager.delete(id)
        for snapshot in checkpoints { #expect(throws: StasisError.self) { try SnapshotStore(home: env.home).manifest(snapshot) } }
    }

    @Test func messagesAreSerializedAndToolsWork() async throws {
        let harness = try await SessionHarness.make()
        let session = try await harness.newSession()
        let id = session.id
        // Two messages at once: the second turn starts only after the first has ended.
        let turnA = try await session.send("$ echo a; sleep 1")
        let turnB = try await session.send("write /root/note.txt\nline one\nEOF\nread /root/note.txt\nls /root\nread /nonexistent")
        let endB = try await awaitRecord(harness.log, id) { record in
            record.kind == .system && (try? record.decodeBody(SystemEventBody.self)).map { $0.event == "turnEnded" && $0.turn == turnB } == true
        }
        let records = try harness.log.records(session: id, limit: Int(endB.seq))
        let users = records.filter { $0.kind == .userMessage }.compactMap { try? $0.decodeBody(UserMessageBody.self) }
        #expect(users.map(\.turn) == [turnA, turnB])
        let endA = try #require(records.first { record in
            (try? record.decodeBody(SystemEventBody.self)).map { $0.event == "turnEnded" && $0.turn == turnA } == true
        })
        let userB = try #require(records.first { (try? $0.decodeBody(UserMessageBody.self))?.turn == turnB })
        #expect(endA.seq < userB.seq, "turn B began after turn A ended")

        let results = toolResults(records)
        #expect(results.map(\.name) == ["shell", "write_file", "read_file", "list_dir", "read_file"])
        #expect(results[1].content.contains("wrote 9 bytes"))
        #expect(results[2].content == "line one\n")
        #expect(results[3].content.contains("note.txt"))
        #expect(results[4].isError)

        // Output over the limit is cut, with a note.
        _ = try await session.sendAndWait("$ yes | head -c 100000")
        let capped = try #require(toolResults(try harness.log.records(session: id)).last)
        #expect(capped.truncated)
        #expect(capped.content.contains("output truncated"))
        #expect(capped.content.utf8.count < 17_000)
        try await harness.manager.delete(id)
    }
}
