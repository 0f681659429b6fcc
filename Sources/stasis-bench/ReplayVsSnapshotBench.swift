import ArgumentParser
import Foundation
import Machines
import Snapshots
import StasisCore

/// `stasis-bench replay-vs-snapshot`: one agent loop made durable two ways, a Replay workflow
/// (every model and tool call a journaled step, resumed by re-execution) and a Stasis session (a
/// context log plus a machine snapshot, resumed by a restore and a read of the log's tail), with
/// DBOS Transact running the same loop as a peer of Replay.
struct ReplayVsSnapshotBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay-vs-snapshot",
        abstract: "Resume an agent at turn N: Replay re-execution against snapshot restore + context log (and DBOS).",
        discussion: """
        For each N: (a) ReplayAgent, a Replay workflow of N + 1 turns, runs and is stopped at turn \
        N + 1's first model call (N turns journaled); fresh engines then resume it, each timed from \
        opening the journal to the moment it would call the model for turn N + 1. (b) The same N \
        turns appended to a context log as a session appends them; timed: a fresh log reading the \
        last --context-turns turns and building the next request (and the whole log, as today's \
        Session does). The model is the scripted model, the tool an in-process function, on both. \
        A bench-bb machine runs idle meanwhile; at the end it is suspended (one stop-mode snapshot) \
        and restored --restores times: the Stasis road's resume is that restore plus the log read. \
        Then scripts/bench/dbos_agent.py runs the loop on DBOS (SQLite): a process killed at turn \
        N + 1 and new processes that recover it. Bytes, CPU and the history limits are reported too.
        """
    )

    @Option(help: ArgumentHelp("Turn counts N.", valueName: "LIST"))
    var turns = "10,100,1000,5000"

    @Option(help: "Measured resumes of each road per N (after one warm-up each).")
    var reps = 9

    @Option(help: "Measured resumes per N from --big-from on.")
    var bigReps = 5

    @Option(help: "N from which --big-reps applies.")
    var bigFrom = 5000

    @Option(help: "Restores of the snapshot (after one warm-up).")
    var restores = 7

    @Option(help: ArgumentHelp("Bytes of tool output per call.", valueName: "BYTES"))
    var toolBytes = 1024

    @Option(help: ArgumentHelp("Turns the model is shown (0: the whole transcript).", valueName: "TURNS"))
    var contextTurns = 20

    @Option(help: ArgumentHelp("Guest memory.", valueName: "SIZE"))
    var memory = "512M"

    @Option(help: "Image to boot (default: bench-bb, made on first use).")
    var image: String?

    @Option(help: ArgumentHelp("Seconds the guest sits idle after boot.", valueName: "SECONDS"))
    var idle: Double = 2

    @Option(help: ArgumentHelp("Seconds to wait for the boot.", valueName: "SECONDS"))
    var bootTimeout: Double = 120

    @Option(help: ArgumentHelp("Seconds to wait, before each N, for other builds and tests to finish.", valueName: "SECONDS"))
    var quietTimeout: Double = 1800

    @Option(help: ArgumentHelp("Python with the dbos package.", valueName: "PATH"))
    var dbosPython = "python3"

    @Option(help: ArgumentHelp("The DBOS peer's script.", valueName: "PATH"))
    var dbosScript = "scripts/bench/dbos_agent.py"

    @Option(help: ArgumentHelp("DBOS recoveries per N (the last repeats).", valueName: "LIST"))
    var dbosReps = "5,5,5,3"

    @Option(help: ArgumentHelp("DBOS histories longer than this are built with synchronous=OFF (0: never).", valueName: "TURNS"))
    var dbosUnsyncedAbove = 1000

    @Flag(help: "Skip the DBOS peer.")
    var noDBOS = false

    @Option(help: ArgumentHelp("Write the chart of resume time against N here (SVG).", valueName: "PATH"))
    var svg: String?

    @Flag(help: "Print the results as JSON on stdout (the table then goes to stderr).")
    var json = false

    func validate() throws {
        let list = try turnList()
        if list.isEmpty || list.contains(where: { $0 < 1 }) { throw ValidationError("--turns needs positive counts") }
        if reps < 1 || bigReps < 1 || restores < 1 { throw ValidationError("--reps, --big-reps and --restores must be at least 1") }
        if toolBytes < 16 { throw ValidationError("--tool-bytes must be at least 16") }
        _ = try MachineSpec.parseMemory(memory)
    }

    private func turnList() throws -> [Int] {
        try turns.split(separator: ",").map {
            guard let n = Int($0.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("--turns: not a number: \($0)") }
            return n
        }
    }

    func run() async throws {
        let chartPath = svg
        try await BenchRun.main(json: json, quietTimeout: quietTimeout) { run, monitor in
            let report = try await measure(run, monitor)
            if let chartPath {
                try Data(report.chart().svg().utf8).write(to: URL(fileURLWithPath: chartPath))
                progress("chart written to \(chartPath)")
            }
            return report
        }
    }

    private func measure(_ run: BenchRun, _ monitor: LoadMonitor) async throws -> ReplayVsSnapshotReport {
        let started = ContinuousClock.now
        let list = try turnList()
        let window = contextTurns > 0 ? contextTurns : nil
        let memoryMiB = try MachineSpec.parseMemory(memory)
        let imageName = try await BenchImage.prepare(image, home: run.home, work: run.work)
        let boot = try await BootArtifacts.resolve(home: run.home, image: imageName)
        let accelerator = AcceleratorChoice.choose(.auto)
        let snapshotter = Snapshotter(home: run.home)
        progress("stasis-bench replay-vs-snapshot: N = \(list.map(String.init).joined(separator: ", ")), \(toolBytes) B tool output, "
                 + "model shown \(window.map { "\($0) turns" } ?? "everything"), \(memoryMiB) MiB \(imageName), \(accelerator.kind.rawValue)")
        let spec = MachineSpec(image: imageName, memoryMiB: memoryMiB, network: .none)
        let machine = try await StasisGuest.boot(run, name: "\(run.prefix)session", spec: spec, boot: boot, idle: idle, timeout: bootTimeout)
        let machineName = await machine.name

        var rows: [ReplayVsSnapshotReport.Row] = []
        for (index, n) in list.enumerated() {
            try await monitor.waitUntilQuiet(timeout: quietTimeout)
            let replay = ReplayRoad(database: run.work.appendingPathComponent("replay-\(n).sqlite"), turns: n, toolBytes: toolBytes, contextTurns: window)
            let session = SessionRoad(database: run.work.appendingPathComponent("context-\(n).sqlite"), turns: n, toolBytes: toolBytes, contextTurns: window)
            var replayBuild: ReplayRoad.Build?
            var sessionBuild: SessionRoad.Build?
            for side in index % 2 == 0 ? [0, 1] : [1, 0] {
                if side == 0 {
                    let b = try await replay.build()
                    progress("N=\(n) replay:  ran \(fmt(b.wallMs / 1000, 2)) s, \(b.events) steps, \(fmt(b.stepOverheadMicros)) µs/step, CPU \(fmt(b.cpuMs)) ms")
                    replayBuild = b
                } else {
                    let q0 = await SnapshotSide.qemuCPU(machine)
                    var b = try await session.build(machineName: machineName)
                    if let q0, let q1 = await SnapshotSide.qemuCPU(machine) { b.qemuIdleCPUMs = q1 - q0 }
                    progress("N=\(n) session: ran \(fmt(b.wallMs / 1000, 2)) s, \(b.records) records, \(fmt(b.appendOverheadMicros)) µs/record, CPU \(fmt(b.cpuMs)) ms")
                    sessionBuild = b
                }
            }
            guard let replayBuild, let sessionBuild else { throw StasisError(.internalError, "a road was not built") }
            let count = n >= bigFrom ? bigReps : reps
            var resumes: [Double] = [], tails: [Double] = [], wholes: [Double] = []
            var tailRecords = 0
            for rep in 0 ... count {  // rep 0 is the warm-up
                for side in [0, 1, 2].map({ ($0 + rep) % 3 }) {
                    switch side {
                    case 0:
                        let ms = try await replay.resume()
                        if rep > 0 { resumes.append(ms) }
                    case 1:
                        let (ms, records) = try session.readTail()
                        tailRecords = records
                        if rep > 0 { tails.append(ms) }
                    default:
                        let ms = try session.readWhole()
                        if rep > 0 { wholes.append(ms) }
                    }
                }
            }
            let row = ReplayVsSnapshotReport.Row(
                turns: n, reps: count, replay: replayBuild, session: sessionBuild, replayResume: Summary(resumes), tailRead: Summary(tails),
                tailRecords: tailRecords, wholeRead: Summary(wholes), journalBytes: replay.storedBytes, logBytes: session.storedBytes)
            progress("N=\(n) resume: replay \(fmt(row.replayResume.median, 1)) ms, log tail \(fmt(row.tailRead.median, 2)) ms, "
                     + "whole log \(fmt(row.wholeRead.median, 1)) ms (\(count) reps); journal \(row.journalBytes / 1024) KiB (WAL \(replay.walBytes)), "
                     + "log \(row.logBytes / 1024) KiB (WAL \(session.walBytes))")
            rows.append(row)
        }

        try await monitor.waitUntilQuiet(timeout: quietTimeout)
        let (manifest, take) = try await SnapshotSide.take(machine, snapshotter: snapshotter)
        try await machine.remove(force: true)
        progress("suspended: snapshot \(manifest.id) in \(fmt(take.wallMs)) ms (paused \(fmt(take.pausedMs, 1)) ms)")
        var restored: [SnapshotSide.Restore] = []
        for round in 0 ... restores {
            let r = try await SnapshotSide.restore(manifest.id, name: "\(run.prefix)r\(round)", snapshotter: snapshotter)
            progress("\(round == 0 ? "warm-up" : "restore \(round)/\(restores)"): returned \(fmt(r.returnedMs)) ms, exec answered \(fmt(r.answeredMs)) ms")
            if round > 0 { restored.append(r) }
            try await Task.sleep(for: .milliseconds(200))
        }
        try await snapshotter.snapshots.remove(manifest.id, force: false, machines: try snapshotter.machines.list())

        let dbos: DBOSPeer.Outcome
        if noDBOS {
            dbos = DBOSPeer.Outcome(result: nil, skipped: "--no-dbos")
        } else {
            try await monitor.waitUntilQuiet(timeout: quietTimeout)
            dbos = await DBOSPeer.run(python: dbosPython, script: URL(fileURLWithPath: dbosScript), turns: list, reps: dbosReps,
                                      work: run.work, toolBytes: toolBytes, contextTurns: window, unsyncedAbove: dbosUnsyncedAbove)
            if let why = dbos.skipped { progress("DBOS peer skipped: \(why)") }
        }
        return ReplayVsSnapshotReport(
            host: await HostInfo.collect(kernel: boot.kernelVersion, image: imageName, accelerator: accelerator, load: monitor.summary),
            memoryMiB: memoryMiB, toolBytes: toolBytes, contextTurns: window, rows: rows, take: take, restores: restored,
            restoreReturned: Summary(restored.map(\.returnedMs)), restoreAnswered: Summary(restored.map(\.answeredMs)),
            limits: rows.max { $0.turns < $1.turns }.flatMap { ReplayVsSnapshotReport.LimitEstimate($0) }, dbos: dbos,
            totalSeconds: (ContinuousClock.now - started).milliseconds / 1000)
    }
}
