import Agents
import Context
import Foundation
import Machines
import Server
import StasisCore
import Synchronization
import Testing

/// `stasis serve` as a real process, killed with SIGKILL mid-turn and started again.
@Suite("serve crash recovery", .serialized, .timeLimit(.minutes(10)))
struct ServeCrashTests {
    /// A `stasis serve` process and the address it printed.
    final class ServeProcess: Sendable {
        let process: Process
        let url: String

        init(home: StasisHome) async throws {
            let process = Process()
            process.executableURL = CLI.binary
            process.arguments = ["serve", "--port", "0"]
            var environment = ProcessInfo.processInfo.environment
            environment["STASIS_HOME"] = home.root.path
            process.environment = environment
            let pipe = Pipe()
            process.standardError = pipe
            process.standardOutput = FileHandle.nullDevice
            let (lines, continuation) = AsyncStream<String>.makeStream()
            let pending = Mutex(Data())
            // Keep draining stderr for the server's whole life, so it never blocks on a full pipe.
            pipe.fileHandleForReading.readabilityHandler = { handle in
                let chunk = handle.availableData
                if chunk.isEmpty { continuation.finish(); handle.readabilityHandler = nil; return }
                let complete = pending.withLock { buffer -> [String] in
                    buffer.append(chunk)
                    var found: [String] = []
                    while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                        found.append(String(decoding: buffer[buffer.startIndex ..< newline], as: UTF8.self))
                        buffer.removeSubrange(buffer.startIndex ... newline)
                    }
                    return found
                }
                for line in complete { continuation.yield(line) }
            }
            try process.run()
            VMFixture.killAtExit(process.processIdentifier)
            var url: String?
            for await line in lines {
                if let range = line.range(of: "stasis serving on ") {
                    url = String(line[range.upperBound...].prefix { $0 != " " })
                    break
                }
            }
            guard let url else { throw StasisError(.internalError, "stasis serve did not start") }
            self.process = process
            self.url = url
        }

        func kill9() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }

        func stop() {
            process.terminate()
            process.waitUntilExit()
        }
    }

    @Test func aTurnCutByKill9IsRecoveredFromTheLastSnapshot() async throws {
        let home = try await VMFixture.shared.secondaryHome()
        var server = try await ServeProcess(home: home)
        let token = try ServerToken.load(ServerToken.file(home: home))
        var client = StasisClient(baseURL: server.url, token: token)

        let info = try await client.createSession(CreateSessionRequest(image: "bb", memory: "256M", idleTimeoutSeconds: 600))
        _ = try await client.send(info.id, text: "$ echo one > /root/f", wait: true)
        let suspended = try await client.suspend(info.id)
        #expect(suspended.state == .suspended)
        let snapshot = try #require(suspended.snapshot)

        // The next turn writes, then blocks in a long tool call; stasis is killed right then.
        let before = try await client.session(info.id)
        let turn = try await client.send(info.id, text: "$ echo two >> /root/f; sleep 600").turn
        for try await record in client.events(info.id, after: before.lastSeq) where record.kind == .toolCall { break }
        server.kill9()

        server = try await ServeProcess(home: home)
        client = StasisClient(baseURL: server.url, token: token)
        var seen: [APIRecord] = []
        for try await record in client.events(info.id, after: before.lastSeq) {
            seen.append(record)
            if record.kind == .system, let event = try? record.decodeBody(SystemEventBody.self), event.event == "turnEnded", event.turn == turn {
                break
            }
        }
        let events = seen.filter { $0.kind == .system }.compactMap { try? $0.decodeBody(SystemEventBody.self) }
        #expect(events.map(\.event).contains("crashed"))
        #expect(events.first { $0.event == "restored" }?.snapshot == snapshot)
        let interrupted = seen.filter { $0.kind == .toolResult }.compactMap { try? $0.decodeBody(ToolResultBody.self) }
        #expect(interrupted.count == 1)
        #expect(interrupted.first?.interrupted == true)
        // The model was told, and answered: the turn ended with an assistant message.
        #expect(seen.last(where: { $0.kind == .assistantMessage }) != nil)

        // Back from the snapshot taken before the cut turn: its write is gone, the earlier one is there.
        _ = try await client.send(info.id, text: "$ cat /root/f", wait: true)
        let last = try await client.session(info.id)
        var output = ""
        for try await record in client.events(info.id, after: last.lastSeq - 6, follow: false) where record.kind == .toolResult {
            output = try record.decodeBody(ToolResultBody.self).content
        }
        #expect(output.hasPrefix("one\n["))
        try await client.deleteSession(info.id)
        server.stop()
    }

    @Test func killedWhileSuspendingLosesNothingCommitted() async throws {
        let home = try await VMFixture.shared.secondaryHome()
        var server = try await ServeProcess(home: home)
        let token = try ServerToken.load(ServerToken.file(home: home))
        var client = StasisClient(baseURL: server.url, token: token)
        let info = try await client.createSession(CreateSessionRequest(image: "bb", memory: "256M", idleTimeoutSeconds: 600))
        var written: [String] = []
        // The kill lands at a different moment of the suspend each round.
        for (round, delay) in [0, 120, 300].enumerated() {
            _ = try await client.send(info.id, text: "$ echo r\(round) >> /root/f", wait: true)
            let before = try await client.session(info.id)
            let suspending = Task { [client] in try? await client.suspend(info.id) }
            try await Task.sleep(for: .milliseconds(delay))
            server.kill9()
            _ = await suspending.value
            server = try await ServeProcess(home: home)
            client = StasisClient(baseURL: server.url, token: token)

            let after = try await client.session(info.id)
            #expect([.idle, .suspended].contains(after.state), "round \(round): \(after.state)")
            var events: [SystemEventBody] = []
            for try await record in client.events(info.id, after: before.lastSeq, follow: false) where record.kind == .system {
                events.append(try record.decodeBody(SystemEventBody.self))
            }
            let fellBack = events.contains { $0.event == "crashed" }
            written.append("r\(round)")
            _ = try await client.send(info.id, text: "$ cat /root/f", wait: true)
            let last = try await client.session(info.id)
            var output = ""
            for try await record in client.events(info.id, after: last.lastSeq - 6, follow: false) where record.kind == .toolResult {
                output = try record.decodeBody(ToolResultBody.self).content
            }
            let lines = output.split(separator: "\n").filter { !$0.hasPrefix("[") }.map(String.init)
            // The suspend's snapshot is committed before QEMU quits: whatever moment the kill
            // hit, the machine comes back with every write, from the live machine or the snapshot.
            #expect(lines == written, "round \(round) (fell back: \(fellBack)): \(output)")
            written = lines
        }
        try await client.deleteSession(info.id)
        server.stop()
    }
}
