import ArgumentParser
import Foundation
import Machines
import Snapshots
import StasisCore
import Synchronization

/// `stasis-bench fork`: N machines from one snapshot at once, sustained restores per minute, and
/// what a suspended machine costs the host.
struct ForkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fork",
        abstract: "Fork N from one snapshot, sustained restores per minute, host RAM of a suspended machine.",
        discussion: """
        One guest is booted, left idle and snapshotted (Snapshotter.take, stop mode): the \
        processes left for it afterwards are counted (the suspended machine's host RAM). A plain \
        QEMU of the same guest is migrated to a file for the baselines.
        (a) Fork: Snapshotter.fork(snapshot, count: --count), then `true` exec'd in every fork at \
        once: ms until all have answered. Baseline: --count plain QEMUs started at once with \
        -incoming of the plain stream, until all have answered an exec (their overlays made \
        before the clock). The sides alternate, --runs rounds.
        (b) Sustained: for each --concurrency C, C workers each repeat Snapshotter.restore -> \
        exec `true` -> Machine.remove for --duration seconds; restores completed in that time, \
        per minute. Baseline: the same loop with plain QEMU (overlay, -incoming, exec, kill). \
        With --sustained fork, the Stasis loop uses Snapshotter.fork(count: 1) instead of \
        restore (RAM mapped copy-on-write, not copied).
        """
    )

    @Option(help: "Machines per fork.")
    var count = 8

    @Option(help: "Measured fork rounds of each side.")
    var runs = 5

    @Option(help: "Unmeasured fork rounds of each side first.")
    var warmups = 1

    @Option(help: ArgumentHelp("Guest memory.", valueName: "SIZE"))
    var memory = "512M"

    @Option(help: "Image to boot (default: bench-bb, made on first use).")
    var image: String?

    @Option(help: ArgumentHelp("Seconds the guest sits idle before it is snapshotted.", valueName: "SECONDS"))
    var idle: Double = 2

    @Option(help: ArgumentHelp("Seconds of each sustained run (0: skip them).", valueName: "SECONDS"))
    var duration: Double = 60

    @Option(help: ArgumentHelp("Parallel workers to try in the sustained runs.", valueName: "LIST"))
    var concurrency = "1,2,4"

    @Option(help: ArgumentHelp("What the Stasis side repeats in the sustained runs: restore or fork (fork --count 1).", valueName: "MODE"))
    var sustained = "restore"

    @Flag(help: "Skip the sustained baseline (plain QEMU) runs.")
    var noSustainedBaseline = false

    @Option(help: ArgumentHelp("Seconds to wait for one boot.", valueName: "SECONDS"))
    var bootTimeout: Double = 120

    @Option(help: ArgumentHelp("Seconds to wait, before each round, for other builds and tests to finish.", valueName: "SECONDS"))
    var quietTimeout: Double = 1800

    @Flag(help: "Print the results as JSON on stdout (the table then goes to stderr).")
    var json = false

    static let forkTarget = 1500.0
    static let perMinuteTarget = 600.0

    var concurrencies: [Int] { concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func validate() throws {
        if count < 1 || count > 64 { throw ValidationError("--count must be 1 to 64") }
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if concurrencies.isEmpty || concurrencies.contains(where: { $0 < 1 }) { throw ValidationError("--concurrency needs positive numbers") }
        if !["restore", "fork"].contains(sustained) { throw ValidationError("--sustained is restore or fork") }
        _ = try MachineSpec.parseMemory(memory)
    }

    func run() async throws {
        try await BenchRun.main(json: json, quietTimeout: quietTimeout) { run, monitor in
            try await measure(run, monitor)
        }
    }

    private func measure(_ run: BenchRun, _ monitor: LoadMonitor) async throws -> ForkReport {
        let memoryMiB = try MachineSpec.parseMemory(memory)
        let imageName = try await BenchImage.prepare(image, home: run.home, work: run.work)
        let boot = try await BootArtifacts.resolve(home: run.home, image: imageName)
        let spec = MachineSpec(image: imageName, memoryMiB: memoryMiB, network: .none)
        let accelerator = AcceleratorChoice.choose(spec.accelerator)
        let snapshotter = Snapshotter(home: run.home)
        progress("stasis-bench fork: \(count) forks × \(runs) rounds (+\(warmups) warm-up), sustained \(Int(duration)) s at concurrency \(concurrencies), \(memoryMiB) MiB, \(accelerator.kind.rawValue)")

        // The snapshot, and what its machine leaves on the host once suspended.
        let source = try await StasisGuest.boot(run, name: "\(run.prefix)src", spec: spec, boot: boot, idle: idle, timeout: bootTimeout)
        guard let pid = await source.record.pid else { throw StasisError(.internalError, "the booted machine has no pid") }
        let running = try QEMUMemory.read(pid: pid, memoryFile: source.paths.memory, bootFiles: [boot.kernel, boot.initramfs])
        let manifest = try await snapshotter.take(source, tag: nil, leaveRunning: false)
        let left = StasisGuest.processesLeft(machineID: source.id)
        let sourceState = try await source.refresh().state
        progress("snapshot \(manifest.id) of \(await source.name): paused \(fmt(manifest.pausedMilliseconds, 1)) ms; machine \(sourceState.rawValue), \(left.count) processes left (\(fmt(left.rssMiB, 1)) MiB Rss); it used \(fmt(running.totalRss, 1)) MiB Rss running")
        try await source.remove(force: true)
        let plain = try await PlainSnapshot.make(folder: run.work.appendingPathComponent("plain-src"), name: "\(run.prefix)psrc", spec: spec, boot: boot,
                                                 accelerator: accelerator, tscKHz: AcceleratorChoice.hostTSCkHz(), idle: idle, timeout: bootTimeout)
        let plainRoot = run.work.appendingPathComponent("plain-forks")

        // (a) fork N
        var forkAll: [Double] = [], forkReturned: [Double] = [], plainAll: [Double] = []
        var forkCPU: [CPUSplit] = [], plainCPU: [CPUSplit] = []
        for round in 0 ..< warmups + runs {
            try await monitor.waitUntilQuiet(timeout: quietTimeout)
            let measured = round >= warmups
            let label = measured ? "run \(round - warmups + 1)/\(runs)" : "warm-up \(round + 1)/\(warmups)"
            for side in round % 2 == 0 ? [0, 1] : [1, 0] {
                if side == 0 {
                    let clock = ContinuousClock()
                    let u0 = CPUTime.processUsage()
                    let t0 = clock.now
                    let machines = try await snapshotter.fork(manifest.id, count: count, namePrefix: "\(run.prefix)f\(round)")
                    let returned = (clock.now - t0).milliseconds
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for m in machines { group.addTask { try await StasisGuest.execTrue(m) } }
                        try await group.waitForAll()
                    }
                    let all = (clock.now - t0).milliseconds
                    let u1 = CPUTime.processUsage()
                    var cpu = CPUSplit(bench: u1.own - u0.own, children: u1.children - u0.children)
                    for m in machines {
                        if let pid = await m.record.pid, let c = CPUTime.of(pid: pid) { cpu.qemu += c.ms }
                    }
                    await withTaskGroup(of: Void.self) { group in
                        for m in machines { group.addTask { try? await m.remove(force: true) } }
                    }
                    progress("\(label) stasis:   \(count) forks answered in \(fmt(all)) ms (fork returned \(fmt(returned))); \(cpu.text)")
                    if measured { forkAll.append(all); forkReturned.append(returned); forkCPU.append(cpu) }
                } else {
                    var prepared: [(MachineRecord, MachinePaths)] = []
                    for i in 0 ..< count {
                        prepared.append(try await PlainQEMU.prepare(root: plainRoot, name: "\(run.prefix)pf\(round)-\(i)", spec: spec,
                                                                    backing: plain.disk, backingFormat: "qcow2"))
                    }
                    let clock = ContinuousClock()
                    let u0 = CPUTime.processUsage()
                    let t0 = clock.now
                    let stream = plain.stream
                    let results = await withTaskGroup(of: Result<PlainQEMU.Restore, any Error>.self) { group in
                        for (record, paths) in prepared {
                            group.addTask {
                                do {
                                    return .success(try await PlainQEMU.restore(record: record, paths: paths, boot: boot, accelerator: accelerator, stream: stream))
                                } catch { return .failure(error) }
                            }
                        }
                        var all: [Result<PlainQEMU.Restore, any Error>] = []
                        for await r in group { all.append(r) }
                        return all
                    }
                    let all = (clock.now - t0).milliseconds
                    let u1 = CPUTime.processUsage()
                    var cpu = CPUSplit(bench: u1.own - u0.own, children: u1.children - u0.children)
                    for case .success(let r) in results { cpu.qemu += CPUTime.of(pid: r.qemu.pid)?.ms ?? 0 }
                    for case .success(let r) in results { await r.qemu.remove() }
                    for case .failure(let error) in results { throw error }
                    progress("\(label) baseline: \(count) plain QEMUs answered in \(fmt(all)) ms; \(cpu.text)")
                    if measured { plainAll.append(all); plainCPU.append(cpu) }
                }
                try await Task.sleep(for: .milliseconds(500))
            }
        }

        // (b) sustained
        var sustainedRows: [ForkReport.Sustained] = []
        if duration > 0 {
            for (i, c) in concurrencies.enumerated() {
                var row = ForkReport.Sustained(concurrency: c, mode: sustained, stasis: .init(), baseline: nil)
                let baselineFirst = i % 2 == 1
                for side in baselineFirst ? [1, 0] : [0, 1] {
                    try await monitor.waitUntilQuiet(timeout: quietTimeout)
                    if side == 0 {
                        row.stasis = try await sustainedStasis(run, snapshotter: snapshotter, id: manifest.id, concurrency: c)
                        progress("sustained c=\(c) stasis (\(sustained)):   \(row.stasis.completed) in \(Int(duration)) s = \(fmt(row.stasis.perMinute)) per minute (cycle median \(fmt(row.stasis.cycle.median)) ms)")
                    } else if !noSustainedBaseline {
                        let b = try await sustainedPlain(run, plain: plain, boot: boot, accelerator: accelerator, concurrency: c)
                        row.baseline = b
                        progress("sustained c=\(c) baseline: \(b.completed) in \(Int(duration)) s = \(fmt(b.perMinute)) per minute (cycle median \(fmt(b.cycle.median)) ms)")
                    }
                    try await Task.sleep(for: .seconds(2))
                }
                sustainedRows.append(row)
            }
        }
        try await snapshotter.snapshots.remove(manifest.id, force: false, machines: try snapshotter.machines.list())
        return ForkReport(
            host: await HostInfo.collect(kernel: boot.kernelVersion, image: imageName, accelerator: accelerator, load: monitor.summary),
            memoryMiB: memoryMiB, count: count, runs: runs, warmups: warmups, duration: duration,
            forkAll: Summary(forkAll), forkReturned: Summary(forkReturned), plainAll: Summary(plainAll),
            forkCPU: CPUSplit.median(forkCPU), plainCPU: CPUSplit.median(plainCPU),
            sustained: sustainedRows, suspendedState: sourceState.rawValue, suspendedProcesses: left.count, suspendedRssMiB: left.rssMiB,
            runningRssMiB: running.totalRss, runningGuestRAMMiB: running.guestRAM,
            memoryFileAllocatedMiB: Double(manifest.memory?.allocated ?? 0) / 1_048_576)
    }

    /// Counts cycles completed by `concurrency` workers within `duration` seconds.
    /// `cycle` returns the CPU time its QEMU used (read just before removing it).
    private func sustainedLoop(concurrency: Int, _ cycle: @escaping @Sendable (_ worker: Int, _ n: Int) async throws -> Double) async throws -> ForkReport.Throughput {
        let clock = ContinuousClock()
        let u0 = CPUTime.processUsage()
        let start = clock.now
        let deadline = start + .milliseconds(Int(duration * 1000))
        let (times, qemuCPU, cycles) = try await withThrowingTaskGroup(of: ([Double], Double, Int).self) { group in
            for w in 0 ..< concurrency {
                group.addTask {
                    var done: [Double] = []
                    var cpu = 0.0
                    var n = 0
                    while clock.now < deadline {
                        let t = clock.now
                        cpu += try await cycle(w, n)
                        n += 1
                        if clock.now <= deadline { done.append((clock.now - t).milliseconds) }
                    }
                    return (done, cpu, n)
                }
            }
            var all: [Double] = []
            var cpu = 0.0
            var cycles = 0
            for try await (d, c, n) in group {
                all += d
                cpu += c
                cycles += n
            }
            return (all, cpu, cycles)
        }
        let u1 = CPUTime.processUsage()
        let n = Double(max(cycles, 1))
        let completed = times.count
        return ForkReport.Throughput(completed: completed, perMinute: Double(completed) * 60 / duration, cycle: Summary(times),
                                     cyclesRun: cycles, cpuPerCycle: CPUSplit(qemu: qemuCPU / n, bench: (u1.own - u0.own) / n,
                                                                              children: (u1.children - u0.children) / n))
    }

    private func sustainedStasis(_ run: BenchRun, snapshotter: Snapshotter, id: String, concurrency: Int) async throws -> ForkReport.Throughput {
        let prefix = run.prefix
        let mode = sustained
        return try await sustainedLoop(concurrency: concurrency) { w, n in
            let machine: Machine
            if mode == "fork" {
                guard let m = try await snapshotter.fork(id, count: 1, namePrefix: "\(prefix)c\(concurrency)w\(w)n\(n)").first else {
                    throw StasisError(.internalError, "fork returned no machine")
                }
                machine = m
            } else {
                machine = try await snapshotter.restore(id, name: "\(prefix)c\(concurrency)w\(w)n\(n)")
            }
            try await StasisGuest.execTrue(machine)
            let cpu = await machine.record.pid.flatMap { CPUTime.of(pid: $0)?.ms } ?? .nan
            try await machine.remove(force: true)
            return cpu
        }
    }

    private func sustainedPlain(_ run: BenchRun, plain: PlainSnapshot, boot: BootArtifacts, accelerator: AcceleratorChoice,
                                concurrency: Int) async throws -> ForkReport.Throughput {
        let root = run.work.appendingPathComponent("plain-sustained")
        let prefix = run.prefix
        return try await sustainedLoop(concurrency: concurrency) { w, n in
            let r = try await plain.restore(root: root, name: "\(prefix)pc\(concurrency)w\(w)n\(n)", boot: boot, accelerator: accelerator, overlayTimed: true)
            let cpu = CPUTime.of(pid: r.qemu.pid)?.ms ?? .nan
            await r.qemu.remove()
            return cpu
        }
    }
}

struct ForkReport: BenchReport {
    var host: HostInfo
    var memoryMiB: Int
    var count: Int
    var runs: Int
    var warmups: Int
    var duration: Double
    /// ms from calling fork to every fork having answered an exec; to fork returning.
    var forkAll: Summary
    var forkReturned: Summary
    var plainAll: Summary
    /// CPU used from calling fork to all answered (medians), and the same for the baseline.
    var forkCPU: CPUSplit
    var plainCPU: CPUSplit
    var sustained: [Sustained]
    /// After a stop-mode snapshot: the source machine's state, processes left and their Rss.
    var suspendedState: String
    var suspendedProcesses: Int
    var suspendedRssMiB: Double
    /// The same machine running, idle, before the snapshot (total Rss and guest RAM, MiB).
    var runningRssMiB: Double
    var runningGuestRAMMiB: Double
    var memoryFileAllocatedMiB: Double

    struct Throughput: Encodable {
        var completed = 0
        var perMinute = Double.nan
        var cycle = Summary([])
        /// Cycles started before the deadline (the last of each worker ends after it).
        var cyclesRun = 0
        /// CPU time per cycle, averaged over all cycles run.
        var cpuPerCycle = CPUSplit()
    }

    struct Sustained: Encodable {
        var concurrency: Int
        var mode: String
        var stasis: Throughput
        var baseline: Throughput?
    }

    var best: Sustained? { sustained.max { $0.stasis.perMinute < $1.stasis.perMinute } }

    var figures: [Figure] {
        var rows = [
            Figure("fork \(count), all answered, median (ms)", fmt(forkAll.median), fmt(plainAll.median), ratio: ratioText(forkAll.median, plainAll.median),
                   target: "<= \(fmt(ForkBench.forkTarget)) ms", met: forkAll.median <= ForkBench.forkTarget),
            Figure("fork \(count), all answered, min-max (ms)", rangeText(forkAll), rangeText(plainAll)),
            Figure("fork \(count), fork() returned, median (ms)", fmt(forkReturned.median), ""),
        ]
        if let best {
            rows.append(Figure("sustained restores per minute, best (c=\(best.concurrency), \(best.mode))", fmt(best.stasis.perMinute),
                               best.baseline.map { fmt($0.perMinute) } ?? "-", ratio: best.baseline.map { ratioText(best.stasis.perMinute, $0.perMinute) } ?? "",
                               target: ">= \(fmt(ForkBench.perMinuteTarget))/min", met: best.stasis.perMinute >= ForkBench.perMinuteTarget))
        }
        rows.append(Figure("suspended machine: processes left", "\(suspendedProcesses)", "", target: "0", met: suspendedProcesses == 0))
        rows.append(Figure("suspended machine: host RAM (MiB Rss)", fmt(suspendedRssMiB, 1), "running: \(fmt(runningRssMiB, 1))", target: "0", met: suspendedRssMiB == 0))
        return rows
    }

    func render() -> String {
        var out = """
        stasis-bench fork — \(host.header)
        guest \(memoryMiB) MiB, --network none; fork \(count): \(runs) rounds (+\(warmups) warm-up) of each side, alternating
        baseline: \(count) plain QEMUs (same devices, anonymous RAM) -incoming of a plain migration stream, all at once, until all answered an exec

        """
        out += Figure.render(figures)
        out += "\n\nCPU from calling fork to all answered (medians): stasis \(forkCPU.text); baseline \(plainCPU.text)."
        out += "\nOn \(host.cores) cores that is at least \(fmt(forkCPU.total / Double(host.cores))) ms (stasis) and \(fmt(plainCPU.total / Double(host.cores))) ms (baseline) of wall time."
        if !sustained.isEmpty {
            out += "\n\nSustained for \(Int(duration)) s: restore -> exec true -> remove, repeated by C workers (restores completed, per minute; cycle ms median, min-max):\n"
            out += table(["C", "stasis mode", "stasis /min", "stasis cycle", "plain /min", "plain cycle"], sustained.map { r in
                ["\(r.concurrency)", r.mode, fmt(r.stasis.perMinute), "\(fmt(r.stasis.cycle.median)) (\(rangeText(r.stasis.cycle)))",
                 r.baseline.map { fmt($0.perMinute) } ?? "-", r.baseline.map { "\(fmt($0.cycle.median)) (\(rangeText($0.cycle)))" } ?? "-"]
            })
            out += "\n(plain cycle: qemu-img overlay, QEMU -incoming, exec, kill; all inside the cycle)"
            out += "\nCPU per cycle (ms; QEMU / stasis-bench process / child processes):\n"
            out += table(["C", "stasis", "plain"], sustained.map { r in
                let c = r.stasis.cpuPerCycle
                return ["\(r.concurrency)", "\(fmt(c.total)) (\(fmt(c.qemu)) / \(fmt(c.bench)) / \(fmt(c.children)))",
                        r.baseline.map { b in "\(fmt(b.cpuPerCycle.total)) (\(fmt(b.cpuPerCycle.qemu)) / \(fmt(b.cpuPerCycle.bench)) / \(fmt(b.cpuPerCycle.children)))" } ?? "-"]
            })
            out += "\n(\(host.cores) cores give at most \(host.cores) × 60000 ms of CPU per minute: cycles/min <= \(host.cores * 60000) / CPU per cycle)"
        }
        out += "\n\nSuspended machine: state \(suspendedState) after the snapshot, \(suspendedProcesses) processes, \(fmt(suspendedRssMiB, 1)) MiB Rss;"
        out += " running idle it used \(fmt(runningRssMiB, 1)) MiB Rss (guest RAM \(fmt(runningGuestRAMMiB, 1))). Its RAM file: \(fmt(memoryFileAllocatedMiB, 1)) MiB on disk."
        out += "\n\n" + Figure.verdict(figures)
        return out
    }
}
