import Foundation
import Replay
import StasisCore

// Runs one Replay workflow for the crash-recovery tests:
//   stasis-replay-worker DB WORKFLOW ID EFFECTS STEPS DELAY_MS start   start (or resume) workflow ID
//   stasis-replay-worker DB resume                                     resume every unfinished workflow
// WORKFLOW is "plain" (each step appends "step-<i>" to EFFECTS) or "keyed" (each step appends
// "step-<i> key=<idempotency key>" unless a line with that key is already there). After its effect
// a step waits DELAY_MS before returning. With STASIS_WORKER_HOLD_AT=K in the environment, step K
// never returns after its effect: a test can kill the worker exactly where the effect is done but
// not yet journaled, without racing a timer.

/// The input of both test workflows.
struct EffectsInput: Codable, Sendable {
    let steps: Int
    let effects: String
    let delayMs: Int
}

/// Appends `line` and a newline to the file at `path`.
func appendLine(_ line: String, to path: String) throws {
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open \(path)", cause: Errno()) }
    defer { close(fd) }
    let bytes = Array((line + "\n").utf8)
    guard write(fd, bytes, bytes.count) == bytes.count else { throw StasisError(.ioFailure, "cannot write \(path)", cause: Errno()) }
}

/// Waits after a step's effect; forever at the step named by STASIS_WORKER_HOLD_AT.
func afterEffect(_ step: Int, delayMs: Int) async throws {
    if let hold = ProcessInfo.processInfo.environment["STASIS_WORKER_HOLD_AT"].flatMap(Int.init), hold == step {
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
    try await Task.sleep(for: .milliseconds(delayMs))
}

/// Registers "plain" and "keyed" on `engine`.
func registerWorkflows(_ engine: WorkflowEngine) async {
    await engine.register("plain") { (ctx: WorkflowContext, input: EffectsInput) async throws -> Int in
        for i in 1 ... input.steps {
            _ = try await ctx.step("step-\(i)") { () async throws -> Int in
                try appendLine("step-\(i)", to: input.effects)
                try await afterEffect(i, delayMs: input.delayMs)
                return i
            }
        }
        return input.steps
    }
    await engine.register("keyed") { (ctx: WorkflowContext, input: EffectsInput) async throws -> Int in
        for i in 1 ... input.steps {
            _ = try await ctx.step("step-\(i)", idempotencyKey: .derived) { key async throws -> Int in
                // The receiver deduplicates by key, as a payment API with an Idempotency-Key header does.
                let line = "step-\(i) key=\(key.value)"
                let existing = (try? String(contentsOfFile: input.effects, encoding: .utf8)) ?? ""
                if !existing.split(separator: "\n").contains(Substring(line)) { try appendLine(line, to: input.effects) }
                try await afterEffect(i, delayMs: input.delayMs)
                return i
            }
        }
        return input.steps
    }
}

let args = CommandLine.arguments
do {
    if args.count == 3, args[2] == "resume" {
        let engine = try WorkflowEngine(databaseURL: URL(fileURLWithPath: args[1]))
        await registerWorkflows(engine)
        let report = try await engine.resumeUnfinished()
        print("completed: \(report.completed.sorted().joined(separator: ",")) failed: \(report.failed)")
        exit(report.failed.isEmpty ? 0 : 1)
    } else if args.count == 8, args[7] == "start", let steps = Int(args[5]), let delay = Int(args[6]) {
        let engine = try WorkflowEngine(databaseURL: URL(fileURLWithPath: args[1]))
        await registerWorkflows(engine)
        let result = try await engine.run(args[2], id: args[3], input: EffectsInput(steps: steps, effects: args[4], delayMs: delay), as: Int.self)
        print("completed: \(args[3]) result: \(result)")
    } else {
        FileHandle.standardError.write(Data("usage: stasis-replay-worker DB WORKFLOW ID EFFECTS STEPS DELAY_MS start | DB resume\n".utf8))
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("stasis-replay-worker: \(error)\n".utf8))
    exit(1)
}
