import Foundation
import StasisCore
import Testing
@testable import Replay

@Suite struct WorkflowEngineTests {
    @Test func journalIsWALWithFullSync() async throws {
        let engine = try WorkflowEngine(databaseURL: temporaryDatabase())
        #expect(try await engine.pragma("journal_mode") == "wal")
        #expect(try await engine.pragma("synchronous") == "2")  // FULL
    }

    @Test func completedStepsReturnTheirJournaledResultWithoutRunning() async throws {
        let db = temporaryDatabase()
        let aRuns = Shared(0)
        let bRuns = Shared(0)
        // First process: step "a" completes, then the process "dies" (the run is left running).
        let first = try WorkflowEngine(databaseURL: db)
        await first.register("add") { (ctx: WorkflowContext, x: Int) async throws -> Int in
            _ = try await ctx.step("a") { () async throws -> Int in aRuns.update { $0 += 1 }; return x + 1 }
            throw CancellationError()
        }
        await #expect(throws: CancellationError.self) { try await first.run("add", id: "w1", input: 40, as: Int.self) }
        #expect(try await first.status(of: "w1")?.status == .running)

        // Second process: same code minus the crash; "a" is not run again, its journaled 41 is used.
        let second = try WorkflowEngine(databaseURL: db)
        await second.register("add") { (ctx: WorkflowContext, x: Int) async throws -> Int in
            let a = try await ctx.step("a") { () async throws -> Int in aRuns.update { $0 += 1 }; return x + 1000 }
            return try await ctx.step("b") { () async throws -> Int in bRuns.update { $0 += 1 }; return a + 1 }
        }
        let report = try await second.resumeUnfinished()
        #expect(report.completed == ["w1"])
        #expect(report.failed.isEmpty)
        #expect(aRuns.current == 1)
        #expect(bRuns.current == 1)
        // Asking again for a completed workflow returns its journaled output and runs nothing.
        #expect(try await second.run("add", id: "w1", input: 40, as: Int.self) == 42)
        #expect(aRuns.current == 1 && bRuns.current == 1)
        let history = try await second.history(of: "w1")
        #expect(history.map(\.step) == ["a", "b"])
        #expect(history.map(\.seq) == [1, 2])
        #expect(history.allSatisfy { $0.isIntact })
    }

    @Test func changedStepNameIsReportedAsNonDeterminism() async throws {
        let db = temporaryDatabase()
        let first = try WorkflowEngine(databaseURL: db)
        await first.register("fetcher") { (ctx: WorkflowContext, _: String) async throws -> String in
            _ = try await ctx.step("fetch") { () async throws -> String in "page" }
            throw CancellationError()
        }
        await #expect(throws: CancellationError.self) { try await first.run("fetcher", id: "nd", input: "url", as: String.self) }

        let second = try WorkflowEngine(databaseURL: db)
        await second.register("fetcher") { (ctx: WorkflowContext, _: String) async throws -> String in
            try await ctx.step("download") { () async throws -> String in "page" }
        }
        let error = await #expect(throws: StasisError.self) { try await second.resume("nd", as: String.self) }
        let message = error?.message ?? ""
        #expect(message.contains("non-determinism"))
        #expect(message.contains("position 1"))
        #expect(message.contains("\"fetch\""))
        #expect(message.contains("\"download\""))
        // The run is not marked failed: fixed code can still resume it.
        #expect(try await second.status(of: "nd")?.status == .running)
    }

    @Test func extraJournaledStepsAreReportedAsNonDeterminism() async throws {
        let db = temporaryDatabase()
        let first = try WorkflowEngine(databaseURL: db)
        await first.register("w") { (ctx: WorkflowContext, _: Int) async throws -> Int in
            _ = try await ctx.step("one") { () async throws -> Int in 1 }
            _ = try await ctx.step("two") { () async throws -> Int in 2 }
            throw CancellationError()
        }
        await #expect(throws: CancellationError.self) { try await first.run("w", id: "x", input: 0, as: Int.self) }
        let second = try WorkflowEngine(databaseURL: db)
        await second.register("w") { (ctx: WorkflowContext, _: Int) async throws -> Int in
            try await ctx.step("one") { () async throws -> Int in 1 }
        }
        let error = await #expect(throws: StasisError.self) { try await second.resume("x", as: Int.self) }
        #expect(error?.message.contains("step \"two\"") == true)
    }

    @Test func eventLimitWarnsThenFails() async throws {
        let warnings = Shared<[HistoryWarning]>([])
        let limits = HistoryLimits(maxEvents: 10, maxBytes: 1 << 20, warnEvents: 5, warnBytes: 1 << 20)
        let engine = try WorkflowEngine(databaseURL: temporaryDatabase(), limits: limits) { w in warnings.update { $0.append(w) } }
        await engine.register("long") { (ctx: WorkflowContext, n: Int) async throws -> Int in
            for i in 1 ... n { _ = try await ctx.step("s\(i)") { () async throws -> Int in i } }
            return n
        }
        #expect(try await engine.run("long", id: "short", input: 4, as: Int.self) == 4)
        #expect(warnings.current.isEmpty)

        let error = await #expect(throws: StasisError.self) { try await engine.run("long", id: "long", input: 20, as: Int.self) }
        #expect(error?.message.contains("history limit") == true)
        #expect(error?.message.contains("continueAsNew") == true)
        #expect(warnings.current.count == 1)
        #expect(warnings.current.first?.events == 5)
        #expect(warnings.current.first?.workflowID == "long")
        #expect(try await engine.status(of: "long")?.status == .failed)
        #expect(try await engine.history(of: "long").count == 10)
    }

    @Test func byteLimitWarnsThenFails() async throws {
        let warnings = Shared<[HistoryWarning]>([])
        let limits = HistoryLimits(maxEvents: 1000, maxBytes: 1000, warnEvents: 1000, warnBytes: 300)
        let engine = try WorkflowEngine(databaseURL: temporaryDatabase(), limits: limits) { w in warnings.update { $0.append(w) } }
        let big = String(repeating: "x", count: 98)  // 100 bytes of JSON with its quotes
        await engine.register("fat") { (ctx: WorkflowContext, n: Int) async throws -> Int in
            for i in 1 ... n { _ = try await ctx.step("s\(i)") { () async throws -> String in big } }
            return n
        }
        let error = await #expect(throws: StasisError.self) { try await engine.run("fat", id: "f", input: 50, as: Int.self) }
        #expect(error?.message.contains("1100 bytes") == true)
        #expect(warnings.current.map(\.bytes) == [300])
        #expect(try await engine.history(of: "f").count == 10)
        #expect(try await engine.status(of: "f")?.status == .failed)
    }

    @Test func continueAsNewStartsAFreshHistory() async throws {
        let warnings = Shared(0)
        // A limit of 3 events per run: 10 iterations only fit by continuing as new.
        let limits = HistoryLimits(maxEvents: 3, maxBytes: 1 << 20, warnEvents: 3, warnBytes: 1 << 20)
        let engine = try WorkflowEngine(databaseURL: temporaryDatabase(), limits: limits) { _ in warnings.update { $0 += 1 } }
        await engine.register("counter") { (ctx: WorkflowContext, n: Int) async throws -> Int in
            let next = try await ctx.step("increment") { () async throws -> Int in n + 1 }
            if next < 10 { try await ctx.continueAsNew(next) }
            return next
        }
        #expect(try await engine.run("counter", id: "c", input: 0, as: Int.self) == 10)
        let runs = try await engine.runs(of: "c")
        #expect(runs.count == 10)
        #expect(runs.dropLast().allSatisfy { $0.status == .continuedAsNew })
        #expect(runs.last?.status == .completed)
        #expect(runs.last?.input == "9")
        #expect(runs.map(\.run) == Array(1 ... 10))
        let firstRun = try await engine.history(of: "c", run: 1)
        #expect(firstRun.map(\.kind) == [.step, .continuedAsNew])
        #expect(try await engine.history(of: "c").map(\.step) == ["increment"])
        #expect(warnings.current == 0)
    }

    @Test func durableSleepSleepsOnlyTheRemainderAfterARestart() async throws {
        let db = temporaryDatabase()
        let total = 1.5
        let sleeper: Workflow<Int, Int> = { ctx, x in
            let before = try await ctx.step("before") { () async throws -> Int in x }
            try await ctx.sleep(for: .milliseconds(Int(total * 1000)))
            return try await ctx.step("after") { () async throws -> Int in before + 1 }
        }
        // First process: interrupted at the sleep (its task is cancelled), after the wake-up time is journaled.
        let first = try WorkflowEngine(databaseURL: db)
        await first.register("sleeper", sleeper)
        let task = Task { try await first.run("sleeper", id: "s", input: 1, as: Int.self) }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        let events = try await first.history(of: "s")
        #expect(events.map(\.kind) == [.step, .sleep])
        let journaledAt = try #require(events.last?.time)

        // The process is down for a while (this is the scenario, not synchronization).
        try await Task.sleep(for: .milliseconds(700))

        let second = try WorkflowEngine(databaseURL: db)
        await second.register("sleeper", sleeper)
        let start = Date()
        let remaining = total - start.timeIntervalSince(journaledAt)
        #expect(try await second.resume("s", as: Int.self) == 2)
        let slept = Date().timeIntervalSince(start)
        #expect(slept >= remaining - 0.05)
        #expect(slept < total - 0.5)
        #expect(Date().timeIntervalSince(journaledAt) >= total - 0.01)
    }

    @Test func idempotencyKeyIsStableAcrossReExecutions() async throws {
        let db = temporaryDatabase()
        let keys = Shared<[String]>([])
        let first = try WorkflowEngine(databaseURL: db)
        await first.register("pay") { (ctx: WorkflowContext, _: Int) async throws -> Int in
            _ = try await ctx.step("reserve") { () async throws -> Int in 1 }
            // The effect happens, then the process dies before the journal write.
            _ = try await ctx.step("charge", idempotencyKey: .derived) { key async throws -> Int in
                keys.update { $0.append(key.value) }
                throw CancellationError()
            }
            return 0
        }
        await #expect(throws: CancellationError.self) { try await first.run("pay", id: "order-7", input: 0, as: Int.self) }
        let second = try WorkflowEngine(databaseURL: db)
        await second.register("pay") { (ctx: WorkflowContext, _: Int) async throws -> Int in
            _ = try await ctx.step("reserve") { () async throws -> Int in 1 }
            return try await ctx.step("charge", idempotencyKey: .derived) { key async throws -> Int in
                keys.update { $0.append(key.value) }
                return 5
            }
        }
        #expect(try await second.resume("order-7", as: Int.self) == 5)
        #expect(keys.current == ["order-7/1/2", "order-7/1/2"])
    }

    @Test func failingWorkflowIsRecordedAsFailed() async throws {
        let engine = try WorkflowEngine(databaseURL: temporaryDatabase())
        await engine.register("bad") { (_: WorkflowContext, _: Int) async throws -> Int in
            throw StasisError(.toolFailed, "the tool broke")
        }
        await #expect(throws: StasisError.self) { try await engine.run("bad", id: "b", input: 0, as: Int.self) }
        let record = try await engine.status(of: "b")
        #expect(record?.status == .failed)
        #expect(record?.result?.contains("the tool broke") == true)
        #expect(try await engine.resumeUnfinished().completed.isEmpty)
    }
}

@Suite struct HistoryLimitTests {
    @Test func catchingTheLimitErrorDoesNotHideIt() async throws {
        let limits = HistoryLimits(maxEvents: 3, maxBytes: 1 << 20, warnEvents: 2, warnBytes: 1 << 20)
        let engine = try WorkflowEngine(databaseURL: temporaryDatabase(), limits: limits) { _ in }
        await engine.register("swallow") { (ctx: WorkflowContext, n: Int) async throws -> Int in
            do {
                for i in 1 ... n { _ = try await ctx.step("s\(i)") { () async throws -> Int in i } }
            } catch {
                return -1  // a workflow that swallows errors still fails on the limit
            }
            return n
        }
        let error = await #expect(throws: StasisError.self) { try await engine.run("swallow", id: "s", input: 5, as: Int.self) }
        #expect(error?.message.contains("history limit") == true)
        #expect(try await engine.status(of: "s")?.status == .failed)
    }
}
