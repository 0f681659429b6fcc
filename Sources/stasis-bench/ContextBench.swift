import ArgumentParser
import Context
import Foundation

/// `stasis-bench context`: durable appends to the context log against raw SQLite, and the
/// storage of a long agent session against LangGraph's SQLite checkpointer.
struct ContextBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "context",
        abstract: "Context log appends and storage against raw SQLite and LangGraph's SqliteSaver.",
        discussion: """
        Each round runs every side on a fresh database in a temporary folder under /tmp, in a \
        different order every round; each side appends --appends records shaped like an agent \
        turn's (user, system, assistant, tool call, tool result):
        (a) one writer, ContextLog.append awaited one by one: appends/s, latency p50/p99/max;
        (b) --sessions writers at once, one session each (the log group-commits them);
        (c) ContextLog.append(contentsOf:) in batches of 100 and of 1000; \
        baseline for each: the same rows in raw SQLite through GRDB (WAL, synchronous=FULL), no \
        checksum, no read-back of the session's head, one transaction per single append; \
        floor: one 4 KiB page rewritten in place in a file, fdatasync after each write. \
        Then once: a --turns-turn agent session stored in the context log, its size empty and at \
        10 %, 25 %, 50 % and 100 % of the turns, next to LangGraph's SqliteSaver holding the same messages \
        (scripts/bench/langgraph_storage.py; skipped if Python or LangGraph is missing).
        """
    )

    @Option(help: "Measured rounds.")
    var runs = 5

    // 2000, not more: a single append waits for one flush, 1–4 ms on the shared hosts, and three
    // sides (1 writer, raw 1 writer, raw concurrent) and the floor pay one per append.
    @Option(help: "Appends per side and round.")
    var appends = 2000

    @Option(help: "Concurrent sessions for side (b).")
    var sessions = 16

    @Option(help: "Turns of the stored agent session.")
    var turns = 1000

    @Option(help: ArgumentHelp("Python with langgraph and langgraph-checkpoint-sqlite (default: $STASIS_BENCH_PYTHON or python3).", valueName: "PATH"))
    var python: String?

    @Option(help: ArgumentHelp("The LangGraph script (default: \(LangGraphPeer.scriptPath) found above the executable or here).", valueName: "PATH"))
    var langgraphScript: String?

    @Option(help: ArgumentHelp("Stop LangGraph at the last turn count it reaches within this time (0: no limit); later sizes are fitted.", valueName: "SECONDS"))
    var peerMaxSeconds: Double = 60

    @Flag(help: "Skip the LangGraph peer.")
    var noPeer = false

    @Option(help: ArgumentHelp("Seconds to wait, before each round, for other builds and tests to finish.", valueName: "SECONDS"))
    var quietTimeout: Double = 0

    @Flag(help: "Keep the temporary folder (its path is printed).")
    var keep = false

    @Flag(help: "Print the results as JSON on stdout (the table then goes to stderr).")
    var json = false

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if appends < 1000 { throw ValidationError("--appends must be at least 1000 (one batch of 1000)") }
        if sessions < 1 { throw ValidationError("--sessions must be at least 1") }
        if turns < 10 { throw ValidationError("--turns must be at least 10") }
    }

    func run() async throws {
        let work = URL(fileURLWithPath: "/tmp").appendingPathComponent("stasis-bench-context-\(randomID())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        if !keep { Cleanup.shared.adopt(folder: work) }
        try await BenchRun.monitored(json: json, quietTimeout: quietTimeout, afterCleanup: { if keep { progress("kept \(work.path)") } }) { monitor in
            try await measure(work: work, monitor: monitor)
        }
    }

    private func measure(work: URL, monitor: LoadMonitor) async throws -> ContextReport {
        let session = SyntheticSession(turns: turns)
        let mix = try session.recordMix(count: appends, session: "bench")
        let meanBody = Double(mix.reduce(0) { $0 + $1.body.utf8.count }) / Double(mix.count)
        // Each concurrent writer appends its share of the same mix to its own session.
        let perSession = (0 ..< sessions).map { s in
            stride(from: s, to: mix.count, by: sessions).map { i -> NewRecord in
                var record = mix[i]
                record.session = "bench-\(s)"
                return record
            }
        }
        progress("stasis-bench context: \(runs) rounds, \(appends) appends per side (mean body \(fmt(meanBody)) B), \(sessions) sessions, in \(work.path)")

        var results: [ContextSide: [AppendRun]] = [:]
        let sides = ContextSide.allCases
        for round in 0 ..< runs {
            try await monitor.waitUntilQuiet(timeout: quietTimeout)
            for i in sides.indices {
                let side = sides[(i + round) % sides.count]
                let folder = work.appendingPathComponent("\(side.rawValue)-\(round)")
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                let result = try await measure(side, mix: mix, perSession: perSession, folder: folder)
                try FileManager.default.removeItem(at: folder)
                results[side, default: []].append(result)
                progress("round \(round + 1)/\(runs) \(side.label): \(fmt(result.appendsPerSecond)) appends/s, p50 \(fmt(result.p50, 2)) ms, p99 \(fmt(result.p99, 2)) ms")
            }
        }

        let points = Array(Set([turns / 10, turns / 4, turns / 2, turns])).sorted()
        let storageFolder = work.appendingPathComponent("storage")
        try FileManager.default.createDirectory(at: storageFolder, withIntermediateDirectories: true)
        let (storage, fullRead) = try ContextStorage.measure(session, points: points, folder: storageFolder)
        progress("context log: \(storage.map { "\($0.turn) turns \(fmt(Double($0.bytes) / 1024)) KiB" }.joined(separator: ", "))")
        var langGraph: LangGraphResult?
        let pythonPath = python ?? ProcessInfo.processInfo.environment["STASIS_BENCH_PYTHON"] ?? "python3"
        if !noPeer, let peer = await LangGraphPeer.locate(python: pythonPath, script: langgraphScript) {
            progress("LangGraph peer: \(turns) turns with \(peer.python), at most about \(fmt(peerMaxSeconds)) s")
            langGraph = try await peer.measure(session, points: points, maxSeconds: peerMaxSeconds, folder: storageFolder)
        }
        let host = ContextHost.collect(folder: work, load: monitor.summary)
        return ContextReport(
            host: host, runs: runs, appends: appends, sessions: sessions, turns: turns, meanBodyBytes: meanBody,
            sides: Dictionary(uniqueKeysWithValues: results.map { ($0.key.rawValue, AppendFigures($0.value)) }),
            storage: storage, fullRead: fullRead, langGraph: langGraph, langGraphStorage: langGraph?.storage(at: points) ?? [],
            command: CommandLine.arguments.joined(separator: " "))
    }

    /// Runs one side on a fresh database in `folder`.
    private func measure(_ side: ContextSide, mix: [NewRecord], perSession: [[NewRecord]], folder: URL) async throws -> AppendRun {
        let url = folder.appendingPathComponent("log.sqlite")
        switch side {
        case .single, .rawSingle: return try await AppendWorkload.sequential(try await open(side, url, mix), mix)
        case .concurrent, .rawConcurrent: return try await AppendWorkload.concurrent(try await open(side, url, mix), perSession)
        case .batch100, .rawBatch100: return try AppendWorkload.batched(try await open(side, url, mix), mix, size: 100)
        case .batch1000, .rawBatch1000: return try AppendWorkload.batched(try await open(side, url, mix), mix, size: 1000)
        case .fsyncFloor: return try AppendWorkload.fsyncFloor(at: url, count: mix.count)
        }
    }

    /// The side's log at `url`, after a few untimed appends (to another session) that open the
    /// connections and prepare the statements.
    private func open(_ side: ContextSide, _ url: URL, _ mix: [NewRecord]) async throws -> any AppendTarget {
        let target: any AppendTarget = side.isBaseline ? try RawSQLiteLog(url: url) : try ContextLog(url: url)
        for record in mix.prefix(20) {
            var warm = record
            warm.session = "warm-up"
            try await target.appendOne(warm)
        }
        return target
    }
}
