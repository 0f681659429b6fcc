import Foundation
import Testing
@testable import Replay

/// Real processes killed with SIGKILL between steps, then resumed by a new process.
@Suite(.serialized) struct CrashRecoveryTests {
    static let steps = 5

    /// The worker executable, built next to the test bundle.
    static var worker: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("stasis-replay-worker")
    }

    @Test(arguments: ["plain", "keyed"], [1, 3])
    func killedWorkerIsResumedToCompletion(workflow: String, killAfter: Int) async throws {
        let db = temporaryDatabase()
        let effects = db.deletingLastPathComponent().appendingPathComponent("effects.txt")
        try FileManager.default.createDirectory(at: db.deletingLastPathComponent(), withIntermediateDirectories: true)
        let id = "\(workflow)-\(killAfter)"

        // Step killAfter appends its line and then never returns: the kill lands after the effect
        // and before the journal write, whatever the load on the machine.
        let running = try Worker(Self.worker, [db.path, workflow, id, effects.path, "\(Self.steps)", "0", "start"],
                                 environment: ["STASIS_WORKER_HOLD_AT": "\(killAfter)"])
        let deadline = Date().addingTimeInterval(60)
        while lines(effects).count < killAfter {
            #expect(Date() < deadline, "the worker never reached \(killAfter) effects")
            if Date() >= deadline { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        kill(running.pid, SIGKILL)
        #expect(await running.exitStatus() == SIGKILL)
        let beforeResume = lines(effects)
        #expect(beforeResume.count >= killAfter && beforeResume.count < Self.steps)

        let engine = try WorkflowEngine(databaseURL: db)
        #expect(try await engine.status(of: id)?.status == .running)
        // The kill landed after step killAfter's effect and before its journal write.
        #expect(try await engine.history(of: id).count == killAfter - 1)

        let resumed = try Worker(Self.worker, [db.path, "resume"])
        #expect(await resumed.exitStatus() == 0)

        #expect(try await engine.status(of: id)?.status == .completed)
        #expect(try await engine.status(of: id)?.result == "\(Self.steps)")
        #expect(try await engine.history(of: id).map(\.step) == (1 ... Self.steps).map { "step-\($0)" })
        let done = lines(effects)
        for i in 1 ... Self.steps {
            let count = done.filter { $0 == "step-\(i)" || $0.hasPrefix("step-\(i) ") }.count
            if workflow == "keyed" {
                #expect(count == 1, "keyed step \(i) took effect \(count) times")
                #expect(done.contains("step-\(i) key=\(id)/1/\(i)"))
            } else {
                #expect(count >= 1, "plain step \(i) took effect \(count) times")
                // At-least-once, seen: the step that was cut off ran again.
                if i == killAfter { #expect(count == 2) }
            }
        }
        if workflow == "keyed" { #expect(done.count == Self.steps) }
        try? FileManager.default.removeItem(at: db.deletingLastPathComponent())
    }

    private func lines(_ url: URL) -> [String] {
        ((try? String(contentsOf: url, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }
}

/// A child process whose exit can be awaited.
struct Worker {
    let pid: Int32
    private let exits: AsyncStream<Int32>

    init(_ executable: URL, _ arguments: [String], environment: [String: String] = [:]) throws {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = { finished in
            continuation.yield(finished.terminationStatus)
            continuation.finish()
        }
        try process.run()
        pid = process.processIdentifier
        exits = stream
    }

    /// The exit status, or the signal number if a signal ended it.
    func exitStatus() async -> Int32 {
        for await status in exits { return status }
        return -1
    }
}
