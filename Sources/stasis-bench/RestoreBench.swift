import ArgumentParser
import Foundation
import Machines
import Snapshots
import StasisCore

/// `stasis-bench restore`: time from asking for a restore to the first answered exec, next to
/// plain QEMU loading a plain migration stream of the same guest; where it goes; and how it grows
/// with guest memory.
struct RestoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore to first exec against plain QEMU -incoming, by stage and by memory size.",
        discussion: """
        One guest is booted, left idle for --idle seconds and snapshotted (Snapshotter.take, stop \
        mode); a plain QEMU of the same guest (same devices, anonymous RAM) is migrated to a file. \
        Then, every round, in turns:
        (a) Stasis: Snapshotter.restore(snapshot) (checksums verified, RAM file copied, QEMU \
        -incoming defer, migrate-incoming, cont, clock/RNG/hostname/generation), then \
        `true` exec'd through the agent: ms from calling restore to the exec's answer.
        (b) Baseline: plain QEMU with -incoming defer, migrate-incoming of the plain stream, then \
        `true` exec'd: ms from spawning QEMU to the answer. Its disk overlay is made before \
        the clock starts.
        (c) Stages: the same restore step by step, each step timed. \
        Last, for each --sizes, a fresh guest and plain stream of that size, and (a) and (b) \
        alternating: --sweep-runs rounds up to 1 GiB, --big-runs above.
        """
    )

    @Option(help: "Measured rounds of each side.")
    var runs = 10

    @Option(help: "Unmeasured rounds of each side first (they warm the page cache).")
    var warmups = 1

    @Option(help: ArgumentHelp("Guest memory of the main measurement.", valueName: "SIZE"))
    var memory = "512M"

    @Option(help: "Image to boot (default: bench-bb, made on first use).")
    var image: String?

    @Option(help: ArgumentHelp("Seconds each guest sits idle before it is snapshotted.", valueName: "SECONDS"))
    var idle: Double = 2

    @Option(help: ArgumentHelp("Guest memory sizes for the growth measurement (empty: skip it).", valueName: "SIZES"))
    var sizes = "256M,512M,1G,2G,4G"

    @Option(help: "Rounds of each side per size up to 1 GiB.")
    var sweepRuns = 10

    @Option(help: "Rounds of each side per size above 1 GiB.")
    var bigRuns = 5

    @Option(help: ArgumentHelp("Seconds to wait for one boot.", valueName: "SECONDS"))
    var bootTimeout: Double = 120

    @Option(help: ArgumentHelp("Seconds to wait, before each round, for other builds and tests to finish.", valueName: "SECONDS"))
    var quietTimeout: Double = 1800

    @Flag(help: "Print the results as JSON on stdout (the table then goes to stderr).")
    var json = false

    static let answerTarget = 200.0
    static let ratioTarget = 1.2

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if warmups < 0 { throw ValidationError("--warmups cannot be negative") }
        _ = try MachineSpec.parseMemory(memory)
        if !sizes.isEmpty { _ = try parseSizes(sizes) }
    }

    func run() async throws {
        try await BenchRun.main(json: json, quietTimeout: quietTimeout) { run, monitor in
            try await measure(run, monitor)
        }
    }

    /// A Stasis snapshot and a plain stream of one fresh guest each.
    struct Pair {
        var manifest: SnapshotManifest
        var plain: PlainSnapshot
    }

    private func makePair(_ run: BenchRun, memoryMiB: Int, imageName: String, boot: BootArtifacts, accelerator: AcceleratorChoice,
                          snapshotter: Snapshotter) async throws -> Pair {
        let spec = MachineSpec(image: imageName, memoryMiB: memoryMiB, network: .none)
        progress("booting a \(memoryMiB) MiB guest and snapshotting it; and a plain QEMU one, migrated to a file")
        let machine = try await StasisGuest.boot(run, name: "\(run.prefix)src\(memoryMiB)", spec: spec, boot: boot, idle: idle, timeout: bootTimeout)
        let manifest = try await snapshotter.take(machine, tag: nil, leaveRunning: false)
        try await machine.remove(force: true)
        let plain = try await PlainSnapshot.make(folder: run.work.appendingPathComponent("plain-\(memoryMiB)"), name: "\(run.prefix)psrc\(memoryMiB)",
                                                 spec: spec, boot: boot, accelerator: accelerator, tscKHz: AcceleratorChoice.hostTSCkHz(),
                                                 idle: idle, timeout: bootTimeout)
        progress("  snapshot \(manifest.id): state \(fmt(Double(manifest.state.size) / 1024, 1)) KB, RAM file \(fmt(Double(manifest.memory?.allocated ?? 0) / 1_048_576, 1)) MiB allocated; plain stream \(fmt(plain.streamMiB, 1)) MiB")
        return Pair(manifest: manifest, plain: plain)
    }

    private func removePair(_ pair: Pair, snapshotter: Snapshotter) async throws {
        try await snapshotter.snapshots.remove(pair.manifest.id, force: false, machines: try snapshotter.machines.list())
        try? FileManager.default.removeItem(at: pair.plain.stream.deletingLastPathComponent())
    }

    struct StasisRestore {
        var returned: Double
        var answered: Double
    }

    private func stasisRestore(_ snapshotter: Snapshotter, id: String, name: String) async throws -> StasisRestore {
        let clock = ContinuousClock()
        let t0 = clock.now
        let machine = try await snapshotter.restore(id, name: name)
        let returned = (clock.now - t0).milliseconds
        try await StasisGuest.execTrue(machine)
        let answered = (clock.now - t0).milliseconds
        try await machine.remove(force: true)
        return StasisRestore(returned: returned, answered: answered)
    }

    private func measure(_ run: BenchRun, _ monitor: LoadMonitor) async throws -> RestoreReport {
        let memoryMiB = try MachineSpec.parseMemory(memory)
        let imageName = try await BenchImage.prepare(image, home: run.home, work: run.work)
        let boot = try await BootArtifacts.resolve(home: run.home, image: imageName)
        let accelerator = AcceleratorChoice.choose(.auto)
        let snapshotter = Snapshotter(home: run.home)
        progress("stasis-bench restore: \(runs) rounds (+\(warmups) warm-up), \(memoryMiB) MiB, image \(imageName), \(accelerator.kind.rawValue)")
        let pair = try await makePair(run, memoryMiB: memoryMiB, imageName: imageName, boot: boot, accelerator: accelerator, snapshotter: snapshotter)
        let plainRoot = run.work.appendingPathComponent("plain-restores")

        var stasis: [StasisRestore] = [], plain: [PlainQEMU.Restore] = [], staged: [RestoreStages] = []
        for round in 0 ..< warmups + runs {
            try await monitor.waitUntilQuiet(timeout: quietTimeout)
            let measured = round >= warmups
            let label = measured ? "run \(round - warmups + 1)/\(runs)" : "warm-up \(round + 1)/\(warmups)"
            for side in [0, 1, 2].map({ ($0 + round) % 3 }) {
                switch side {
                case 0:
                    let r = try await stasisRestore(snapshotter, id: pair.manifest.id, name: "\(run.prefix)r\(round)")
                    progress("\(label) stasis:   exec answered \(fmt(r.answered)) ms (restore returned \(fmt(r.returned)))")
                    if measured { stasis.append(r) }
                case 1:
                    let r = try await pair.plain.restore(root: plainRoot, name: "\(run.prefix)p\(round)", boot: boot, accelerator: accelerator)
                    await r.qemu.remove()
                    progress("\(label) baseline: exec answered \(fmt(r.answered)) ms (QEMU started \(fmt(r.started)), running \(fmt(r.loaded)))")
                    if measured { plain.append(r) }
                default:
                    let (s, machine) = try await StagedRestore.run(snapshotter, id: pair.manifest.id, name: "\(run.prefix)s\(round)")
                    try await machine.remove(force: true)
                    progress("\(label) staged:   \(fmt(s.total)) ms (verify \(fmt(s.verify)), RAM \(fmt(s.ramCopy)), QEMU start \(fmt(s.qemuStart)), loaded \(fmt(s.deviceStateLoaded)), agent \(fmt(s.agentSteps)), exec \(fmt(s.firstExec)))")
                    if measured { staged.append(s) }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        var report = RestoreReport(
            host: await HostInfo.collect(kernel: boot.kernelVersion, image: imageName, accelerator: accelerator, load: monitor.summary),
            memoryMiB: memoryMiB, runs: runs, warmups: warmups,
            stateKB: Double(pair.manifest.state.size) / 1024, memoryAllocatedMiB: Double(pair.manifest.memory?.allocated ?? 0) / 1_048_576,
            plainStreamMiB: pair.plain.streamMiB,
            stasisAnswered: Summary(stasis.map(\.answered)), stasisReturned: Summary(stasis.map(\.returned)),
            plainAnswered: Summary(plain.map(\.answered)), plainStarted: Summary(plain.map(\.started)), plainLoaded: Summary(plain.map(\.loaded)),
            stages: RestoreStages.median(staged), stagedRuns: staged, sweep: [])
        try await removePair(pair, snapshotter: snapshotter)

        if !sizes.isEmpty {
            for size in try parseSizes(sizes) {
                let n = size > 1024 ? bigRuns : sweepRuns
                let p = try await makePair(run, memoryMiB: size, imageName: imageName, boot: boot, accelerator: accelerator, snapshotter: snapshotter)
                var s: [Double] = [], b: [Double] = []
                for round in 0 ..< n + 1 {  // one warm-up each
                    try await monitor.waitUntilQuiet(timeout: quietTimeout)
                    for side in round % 2 == 0 ? [0, 1] : [1, 0] {
                        if side == 0 {
                            let r = try await stasisRestore(snapshotter, id: p.manifest.id, name: "\(run.prefix)m\(size)-\(round)")
                            if round > 0 { s.append(r.answered) }
                            progress("\(size) MiB \(round == 0 ? "warm-up" : "run \(round)/\(n)") stasis:   \(fmt(r.answered)) ms")
                        } else {
                            let r = try await p.plain.restore(root: plainRoot, name: "\(run.prefix)pm\(size)-\(round)", boot: boot, accelerator: accelerator)
                            await r.qemu.remove()
                            if round > 0 { b.append(r.answered) }
                            progress("\(size) MiB \(round == 0 ? "warm-up" : "run \(round)/\(n)") baseline: \(fmt(r.answered)) ms")
                        }
                        try await Task.sleep(for: .milliseconds(200))
                    }
                }
                report.sweep.append(RestoreReport.SizeRow(
                    memoryMiB: size, runs: n, stasis: Summary(s), baseline: Summary(b),
                    memoryAllocatedMiB: Double(p.manifest.memory?.allocated ?? 0) / 1_048_576, plainStreamMiB: p.plain.streamMiB))
                try await removePair(p, snapshotter: snapshotter)
            }
        }
        report.host.load = monitor.summary
        return report
    }
}

struct RestoreReport: BenchReport {
    var host: HostInfo
    var memoryMiB: Int
    var runs: Int
    var warmups: Int
    var stateKB: Double
    var memoryAllocatedMiB: Double
    var plainStreamMiB: Double
    /// ms from calling Snapshotter.restore to the first exec answered / to restore returning.
    var stasisAnswered: Summary
    var stasisReturned: Summary
    /// ms from spawning plain QEMU to: exec answered, -daemonize returned, running.
    var plainAnswered: Summary
    var plainStarted: Summary
    var plainLoaded: Summary
    var stages: RestoreStages
    var stagedRuns: [RestoreStages]
    var sweep: [SizeRow]

    struct SizeRow: Encodable {
        var memoryMiB: Int
        var runs: Int
        var stasis: Summary
        var baseline: Summary
        var memoryAllocatedMiB: Double
        var plainStreamMiB: Double
    }

    var figures: [Figure] {
        let ratio = stasisAnswered.median / plainAnswered.median
        return [
            Figure("restore to first exec, median (ms)", fmt(stasisAnswered.median), fmt(plainAnswered.median), ratio: String(format: "%.2f", ratio),
                   target: "<= \(fmt(RestoreBench.answerTarget)) ms", met: stasisAnswered.median <= RestoreBench.answerTarget),
            Figure("restore to first exec, ratio (stasis / baseline)", String(format: "%.2f", ratio), "", ratio: String(format: "%.2f", ratio),
                   target: "<= \(fmt(RestoreBench.ratioTarget, 1))x", met: ratio <= RestoreBench.ratioTarget),
            Figure("restore to first exec, min-max (ms)", rangeText(stasisAnswered), rangeText(plainAnswered)),
            Figure("restore() returned, median (ms)", fmt(stasisReturned.median), ""),
        ]
    }

    func render() -> String {
        var out = """
        stasis-bench restore — \(host.header)
        guest \(memoryMiB) MiB, --network none; \(runs) rounds (+\(warmups) warm-up) of each side, alternating
        snapshot: state \(fmt(stateKB, 1)) KB, RAM file \(fmt(memoryAllocatedMiB, 1)) MiB allocated; plain stream \(fmt(plainStreamMiB, 1)) MiB
        baseline: plain QEMU (same devices, anonymous RAM) -incoming defer + migrate-incoming of the plain stream, spawn -> first exec answered
          (its disk overlay made before the clock starts)

        """
        out += Figure.render(figures)
        let s = stages
        out += "\n\nWhere the time goes (medians of \(stagedRuns.count) staged runs, ms; the baseline's from the same rounds):\n"
        let plainExec = plainAnswered.median - plainLoaded.median
        out += table(["stage", "stasis", "baseline"], [
            ["find snapshot (list, manifests)", fmt(s.find, 1), "-"],
            ["verify checksums (every part)", fmt(s.verify, 1), "-"],
            ["compatibility (qemu --version, layout, kernel)", fmt(s.compatibility, 1), "-"],
            ["machine record + disk overlay", fmt(s.recordAndOverlay, 1), "(before clock)"],
            ["RAM written from the chunk store", fmt(s.ramCopy, 1), "-"],
            ["device state put back together (delta over its base)", fmt(s.stateWrite, 1), "-"],
            ["record writes", fmt(s.recordWrites, 1), "-"],
            ["QEMU process start (until -daemonize returns)", fmt(s.qemuStart, 1), fmt(plainStarted.median, 1)],
            ["device state loaded (query-status leaves inmigrate)", fmt(s.deviceStateLoaded, 1), fmt(plainLoaded.median - plainStarted.median, 1)],
            ["guest running (cont)", fmt(s.cont, 1), "(autostart)"],
            ["agent: hello, clock, RNG, hostname, generation", fmt(s.agentSteps, 1), "-"],
            ["first answered exec (new connection, hello, exec true)", fmt(s.firstExec, 1), fmt(plainExec, 1)],
            ["total", fmt(s.total, 1), fmt(plainAnswered.median, 1)],
            ["(a second exec right after, for comparison)", fmt(s.secondExec, 1), "-"],
            ["real Snapshotter.restore + exec, same rounds", fmt(stasisAnswered.median, 1), ""],
        ])
        out += "\n\nWhat the restored guest's QEMU did in the last steps (medians; TBs = blocks of guest code translated by TCG):\n"
        let work = { (name: String, ms: Double, w: RestoreStages.GuestWork) in
            [name, fmt(ms, 1), fmt(w.qemuCPU), fmt(w.minorFaults), fmt(w.translatedBlocks)]
        }
        out += table(["step", "wall ms", "QEMU CPU ms", "minor faults", "TBs translated"], [
            work("agent: hello, clock, RNG, hostname, generation", s.agentSteps, s.agentWork),
            work("first exec true", s.firstExec, s.firstExecWork),
            work("second exec true", s.secondExec, s.secondExecWork),
        ])
        if !sweep.isEmpty {
            out += "\n\nRestore to first exec by guest memory (ms; median, min-max):\n"
            out += table(["memory", "runs", "stasis", "baseline", "ratio", "RAM file allocated", "plain stream"], sweep.map { r in
                [r.memoryMiB >= 1024 ? "\(r.memoryMiB / 1024) GiB" : "\(r.memoryMiB) MiB", "\(r.runs)",
                 "\(fmt(r.stasis.median)) (\(rangeText(r.stasis)))", "\(fmt(r.baseline.median)) (\(rangeText(r.baseline)))",
                 ratioText(r.stasis.median, r.baseline.median), "\(fmt(r.memoryAllocatedMiB, 1)) MiB", "\(fmt(r.plainStreamMiB, 1)) MiB"]
            })
        }
        out += "\n\n" + Figure.verdict(figures)
        return out
    }
}
