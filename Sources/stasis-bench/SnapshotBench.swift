import ArgumentParser
import Foundation
import Machines
import Snapshots
import StasisCore

/// `stasis-bench snapshot`: how long a snapshot pauses the guest and how long until it is
/// committed, next to a plain QEMU migration of the same guest to a file.
struct SnapshotBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Snapshot pause and commit time against a plain QEMU migration to a file.",
        discussion: """
        Each round boots fresh guests (--memory, --network none, image bench-bb), lets each sit \
        idle for --idle seconds, then:
        (a) Stasis: Snapshotter.take(machine, leaveRunning: false): the guest's pause (the \
        manifest's pausedMilliseconds, stop -> quit) and the time from calling take() to its \
        return (parts fsynced, manifest written, folder renamed).
        (b) The same with leaveRunning: true (pause: stop -> cont, RAM copied inside it).
        (c) Baseline: plain QEMU, Stasis's command line with ordinary anonymous guest RAM (not \
        file-backed), `stop`, `migrate exec:cat > FILE` without x-ignore-shared (all of RAM \
        in the stream), query-migrate every 1 ms until completed, fsync: timed from stop.
        (d) Stages: take() again step by step (stop and leave-running), on two more machines. \
        The sides take turns in a different order every round. After each (a), the machine's \
        processes are counted: a suspended machine must leave none.
        """
    )

    @Option(help: "Measured rounds (each boots one guest per side).")
    var runs = 10

    @Option(help: ArgumentHelp("Guest memory.", valueName: "SIZE"))
    var memory = "512M"

    @Option(help: "Image to boot (default: bench-bb, made on first use).")
    var image: String?

    @Option(help: ArgumentHelp("Seconds each guest sits idle after booting.", valueName: "SECONDS"))
    var idle: Double = 2

    @Flag(inversion: .prefixedNo, help: "Also time take()'s steps one by one, on two more guests per round.")
    var stages = true

    @Option(help: ArgumentHelp("Seconds to wait for one boot.", valueName: "SECONDS"))
    var bootTimeout: Double = 120

    @Option(help: ArgumentHelp("Seconds to wait, before each round, for other builds and tests to finish.", valueName: "SECONDS"))
    var quietTimeout: Double = 1800

    @Flag(help: "Print the results as JSON on stdout (the table then goes to stderr).")
    var json = false

    static let pausedTarget = 50.0
    static let committedTarget = 300.0

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        _ = try MachineSpec.parseMemory(memory)
    }

    func run() async throws {
        try await BenchRun.main(json: json, quietTimeout: quietTimeout) { run, monitor in
            try await measure(run, monitor)
        }
    }

    enum Side: String, CaseIterable { case stop, leave, plain, stagedStop, stagedLeave }

    struct Sample: Encodable {
        var paused: Double
        var committed: Double
    }

    private func measure(_ run: BenchRun, _ monitor: LoadMonitor) async throws -> SnapshotReport {
        let memoryMiB = try MachineSpec.parseMemory(memory)
        let imageName = try await BenchImage.prepare(image, home: run.home, work: run.work)
        let boot = try await BootArtifacts.resolve(home: run.home, image: imageName)
        let spec = MachineSpec(image: imageName, memoryMiB: memoryMiB, network: .none)
        let accelerator = AcceleratorChoice.choose(spec.accelerator)
        let tscKHz = AcceleratorChoice.hostTSCkHz()
        let snapshotter = Snapshotter(home: run.home)
        var sides: [Side] = [.stop, .leave, .plain]
        if stages { sides += [.stagedStop, .stagedLeave] }
        progress("stasis-bench snapshot: \(runs) rounds, \(memoryMiB) MiB, image \(imageName), \(accelerator.kind.rawValue), idle \(idle) s; sides \(sides.map(\.rawValue).joined(separator: ", "))")

        var stop: [Sample] = [], leave: [Sample] = [], plain: [Sample] = []
        var stagedStop: [TakeStages] = [], stagedLeave: [TakeStages] = []
        var leftProcesses: [Int] = [], leftRss: [Double] = []
        var stateKB: [Double] = [], memoryAllocated: [Double] = [], diskAllocated: [Double] = [], streamMiB: [Double] = []
        var leaveMemoryAllocated: [Double] = []
        for round in 0 ..< runs {
            try await monitor.waitUntilQuiet(timeout: quietTimeout)
            let order = (0 ..< sides.count).map { sides[($0 + round) % sides.count] }
            for side in order {
                let name = "\(run.prefix)\(side.rawValue.prefix(2))\(round)"
                switch side {
                case .stop, .leave:
                    let machine = try await StasisGuest.boot(run, name: name, spec: spec, boot: boot, idle: idle, timeout: bootTimeout)
                    let clock = ContinuousClock()
                    let t0 = clock.now
                    let manifest = try await snapshotter.take(machine, tag: nil, leaveRunning: side == .leave)
                    let committed = (clock.now - t0).milliseconds
                    let sample = Sample(paused: manifest.pausedMilliseconds, committed: committed)
                    if side == .stop {
                        stop.append(sample)
                        let left = StasisGuest.processesLeft(machineID: machine.id)
                        leftProcesses.append(left.count)
                        leftRss.append(left.rssMiB)
                        stateKB.append(Double(manifest.state.size) / 1024)
                        memoryAllocated.append(Double(manifest.memoryAddedBytes ?? Int(manifest.memory?.allocated ?? 0)) / 1_048_576)
                        diskAllocated.append(Double(manifest.disk.allocated) / 1_048_576)
                        progress("round \(round + 1)/\(runs) stasis stop:    paused \(fmt(sample.paused, 1)) ms, committed \(fmt(committed)) ms; processes left \(left.count)")
                    } else {
                        leave.append(sample)
                        leaveMemoryAllocated.append(Double(manifest.memoryAddedBytes ?? Int(manifest.memory?.allocated ?? 0)) / 1_048_576)
                        progress("round \(round + 1)/\(runs) stasis leave:   paused \(fmt(sample.paused, 1)) ms, committed \(fmt(committed)) ms")
                    }
                    try await machine.remove(force: true)
                    try await snapshotter.snapshots.remove(manifest.id, force: false, machines: [])
                case .plain:
                    let folder = run.work.appendingPathComponent("plain-\(round)")
                    let snap = try await PlainSnapshot.make(folder: folder, name: name, spec: spec, boot: boot, accelerator: accelerator,
                                                            tscKHz: tscKHz, idle: idle, timeout: bootTimeout)
                    plain.append(Sample(paused: snap.paused, committed: snap.committed))
                    streamMiB.append(snap.streamMiB)
                    try? FileManager.default.removeItem(at: folder)
                    progress("round \(round + 1)/\(runs) plain QEMU:     paused \(fmt(snap.paused, 1)) ms, committed \(fmt(snap.committed)) ms (stream \(fmt(snap.streamMiB, 1)) MiB)")
                case .stagedStop, .stagedLeave:
                    let machine = try await StasisGuest.boot(run, name: name, spec: spec, boot: boot, idle: idle, timeout: bootTimeout)
                    let folder = run.work.appendingPathComponent("staged-\(round)-\(side.rawValue)")
                    let s = try await StagedTake.run(machine, leaveRunning: side == .stagedLeave, folder: folder)
                    if side == .stagedStop { stagedStop.append(s) } else { stagedLeave.append(s) }
                    try await machine.remove(force: true)
                    try? FileManager.default.removeItem(at: folder)
                    progress("round \(round + 1)/\(runs) staged \(side == .stagedStop ? "stop" : "leave"):   paused \(fmt(s.paused, 1)) ms, total \(fmt(s.total)) ms (convert \(fmt(s.diskConvert)), digests \(fmt(s.digestState + s.digestMemory + s.digestDisk)), fsync \(fmt(s.fsyncParts)))")
                }
            }
        }
        let host = await HostInfo.collect(kernel: boot.kernelVersion, image: imageName, accelerator: accelerator, load: monitor.summary)
        return SnapshotReport(
            host: host, memoryMiB: memoryMiB, runs: runs, idleSeconds: idle,
            stopPaused: Summary(stop.map(\.paused)), stopCommitted: Summary(stop.map(\.committed)),
            leavePaused: Summary(leave.map(\.paused)), leaveCommitted: Summary(leave.map(\.committed)),
            plainPaused: Summary(plain.map(\.paused)), plainCommitted: Summary(plain.map(\.committed)),
            stagesStop: stagedStop.isEmpty ? nil : TakeStages.median(stagedStop),
            stagesLeave: stagedLeave.isEmpty ? nil : TakeStages.median(stagedLeave),
            stagedStopRuns: stagedStop, stagedLeaveRuns: stagedLeave,
            processesLeft: leftProcesses.max() ?? -1, processesLeftRssMiB: leftRss.max() ?? .nan,
            stateKB: Summary(stateKB), memoryAllocatedMiB: Summary(memoryAllocated), diskAllocatedMiB: Summary(diskAllocated),
            leaveMemoryAllocatedMiB: Summary(leaveMemoryAllocated), plainStreamMiB: Summary(streamMiB))
    }
}

struct SnapshotReport: BenchReport {
    var host: HostInfo
    var memoryMiB: Int
    var runs: Int
    var idleSeconds: Double
    /// ms. Stasis without and with leaveRunning; the baseline's paused is stop → completed, its
    /// committed stop → completed + fsync.
    var stopPaused: Summary
    var stopCommitted: Summary
    var leavePaused: Summary
    var leaveCommitted: Summary
    var plainPaused: Summary
    var plainCommitted: Summary
    var stagesStop: TakeStages?
    var stagesLeave: TakeStages?
    var stagedStopRuns: [TakeStages]
    var stagedLeaveRuns: [TakeStages]
    /// After take() without leaveRunning: the most QEMU processes left for the machine in any round.
    var processesLeft: Int
    var processesLeftRssMiB: Double
    var stateKB: Summary
    var memoryAllocatedMiB: Summary
    var diskAllocatedMiB: Summary
    var leaveMemoryAllocatedMiB: Summary
    var plainStreamMiB: Summary

    var figures: [Figure] {
        let p = SnapshotBench.pausedTarget, c = SnapshotBench.committedTarget
        return [
            Figure("paused, stop mode, median (ms)", fmt(stopPaused.median, 1), fmt(plainPaused.median, 1),
                   ratio: ratioText(stopPaused.median, plainPaused.median), target: "<= \(fmt(p)) ms", met: stopPaused.median <= p),
            Figure("paused, stop mode, min-max (ms)", rangeText(stopPaused, 1), rangeText(plainPaused, 1)),
            Figure("committed, stop mode, median (ms)", fmt(stopCommitted.median), fmt(plainCommitted.median),
                   ratio: ratioText(stopCommitted.median, plainCommitted.median), target: "<= \(fmt(c)) ms", met: stopCommitted.median <= c),
            Figure("committed, stop mode, min-max (ms)", rangeText(stopCommitted), rangeText(plainCommitted)),
            Figure("paused, leave-running, median (ms)", fmt(leavePaused.median, 1), fmt(plainPaused.median, 1),
                   ratio: ratioText(leavePaused.median, plainPaused.median), target: "<= \(fmt(p)) ms", met: leavePaused.median <= p),
            Figure("paused, leave-running, min-max (ms)", rangeText(leavePaused, 1), rangeText(plainPaused, 1)),
            Figure("committed, leave-running, median (ms)", fmt(leaveCommitted.median), fmt(plainCommitted.median),
                   ratio: ratioText(leaveCommitted.median, plainCommitted.median), target: "<= \(fmt(c)) ms", met: leaveCommitted.median <= c),
            Figure("committed, leave-running, min-max (ms)", rangeText(leaveCommitted), rangeText(plainCommitted)),
            Figure("processes left after stop-mode snapshot", "\(processesLeft)", "", target: "0", met: processesLeft == 0),
        ]
    }

    func render() -> String {
        var out = """
        stasis-bench snapshot — \(host.header)
        guest \(memoryMiB) MiB, --network none, booted and idle \(fmt(idleSeconds, 1)) s; \(runs) rounds, sides alternating
        baseline: plain QEMU (same devices, guest RAM anonymous, not file-backed), stop + migrate exec:cat > file
          (no x-ignore-shared: all RAM in the stream), timed from stop; committed = + fsync of the file

        """
        out += Figure.render(figures)
        out += "\n\nSizes (medians): state \(fmt(stateKB.median, 1)) KB, RAM \(fmt(memoryAllocatedMiB.median, 1)) MiB new in the chunk store"
        out += " (leave-running \(fmt(leaveMemoryAllocatedMiB.median, 1)) MiB), disk layer \(fmt(diskAllocatedMiB.median, 2)) MiB;"
        out += " plain stream \(fmt(plainStreamMiB.median, 1)) MiB"
        if processesLeft >= 0 {
            out += "\nSuspended machine (after stop-mode take): \(processesLeft) processes, \(fmt(processesLeftRssMiB, 1)) MiB Rss on the host"
        }
        if let a = stagesStop, let b = stagesLeave {
            out += "\n\nWhere take() spends its time, step by step (medians of \(stagedStopRuns.count) staged runs, ms):\n"
            let rows = zip(a.rows, b.rows).map { [$0[0], $0[1], $1[1]] }
            out += table(["step", "stop", "leave-running"], rows)
        }
        out += "\n\n" + Figure.verdict(figures)
        return out
    }
}
