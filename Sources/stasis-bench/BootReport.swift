import Foundation

/// Medians of each phase of the Stasis side, from spawning `stasis run` (milliseconds).
struct StasisPhases: Encodable {
    /// CLI start, argument parsing, initramfs check (hashes the agent and modules), record written.
    var cliToRecord: Double
    /// Record → QEMU command line written, just before QEMU is spawned (includes the qcow2 overlay).
    var recordToQEMUSpawn: Double
    /// QEMU spawned → console shows "stasis-init: serving": QEMU start, kernel, initramfs, agent.
    var qemuSpawnToServing: Double
    /// Serving → `stasis run -d` exited: agent handshake (hello retried with back-off), setClock,
    /// record saved, CLI exit.
    var servingToRunReturned: Double
    /// `stasis run` exited → `stasis exec NAME true` answered: a second CLI start, connect,
    /// handshake, exec, CLI exit.
    var runReturnedToExecAnswered: Double
    /// Everything outside QEMU's own boot: total − (serving − QEMU spawned). Less noisy than the
    /// ratio of two boot medians on a shared host, since QEMU's boot time cancels out.
    var outsideQEMU: Double

    init(_ runs: [BootBench.StasisRun]) {
        func median(_ values: [Double?]) -> Double { Summary.median(values.compactMap { $0 }.filter { !$0.isNaN }.sorted()) }
        cliToRecord = median(runs.map(\.record))
        recordToQEMUSpawn = median(runs.map { r in r.qemuSpawned.flatMap { q in r.record.map { q - $0 } } })
        qemuSpawnToServing = median(runs.map { r in r.serving.flatMap { s in r.qemuSpawned.map { s - $0 } } })
        servingToRunReturned = median(runs.map { r in r.serving.map { r.runReturned - $0 } })
        runReturnedToExecAnswered = median(runs.map { $0.total - $0.runReturned })
        outsideQEMU = median(runs.map { r in r.serving.flatMap { s in r.qemuSpawned.map { r.total - (s - $0) } } })
    }
}

/// Everything `stasis-bench boot` measured; encoded as is for --json.
struct BootReport: BenchReport {
    var date: String
    var cores: Int
    var loadAverage: String
    var qemu: String
    var accelerator: String
    var acceleratorReason: String
    var tscKHz: Int?
    var kernel: String
    var image: String
    var memoryMiB: Int
    var runs: Int
    var warmups: Int
    var stasisCLI: String
    /// Stasis's QEMU command line for one machine, folder/id/name replaced by placeholders.
    var commandLine: String?
    /// Whether the baseline ran exactly that command line (minus -daemonize/-pidfile).
    var commandLineIdentical: Bool?
    var baselineCommandLine: String?

    /// (a) and (b), milliseconds.
    var stasisBoot = Summary([])
    var baselineBoot = Summary([])
    var ratio = Double.nan
    var phases = StasisPhases([])
    /// One in-process Machine.boot (no CLI), milliseconds.
    var libraryBoot = Double.nan
    /// (c), milliseconds.
    var exec = Latency([])
    var ping = Latency([])
    /// (d), MiB: right after boot, and after the round trips (the figure held to the target).
    var memoryAfterBoot: QEMUMemory?
    var memory: QEMUMemory?

    struct Target: Encodable {
        var name: String
        var value: Double
        var limit: Double
        var unit: String
        var met: Bool
    }

    static let bootRatioTarget = 1.15
    static let execP50Target = 2.0
    static let execP99Target = 10.0
    static let overheadTarget = 40.0

    var targets: [Target] {
        [
            Target(name: "boot ratio (stasis / plain QEMU)", value: ratio, limit: Self.bootRatioTarget, unit: "x", met: ratio <= Self.bootRatioTarget),
            Target(name: "exec true p50", value: exec.p50, limit: Self.execP50Target, unit: "ms", met: exec.p50 <= Self.execP50Target),
            Target(name: "exec true p99", value: exec.p99, limit: Self.execP99Target, unit: "ms", met: exec.p99 <= Self.execP99Target),
            Target(name: "QEMU overhead Rss", value: memory?.overhead ?? .nan, limit: Self.overheadTarget, unit: "MiB",
                   met: (memory?.overhead ?? .infinity) <= Self.overheadTarget),
        ]
    }

    enum CodingKeys: String, CodingKey {
        case date, cores, loadAverage, qemu, accelerator, acceleratorReason, tscKHz, kernel, image, memoryMiB, runs, warmups
        case stasisCLI, commandLine, commandLineIdentical, baselineCommandLine, stasisBoot, baselineBoot, ratio, phases
        case libraryBoot, exec, ping, memoryAfterBoot, memory, targets
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(date, forKey: .date)
        try c.encode(cores, forKey: .cores)
        try c.encode(loadAverage, forKey: .loadAverage)
        try c.encode(qemu, forKey: .qemu)
        try c.encode(accelerator, forKey: .accelerator)
        try c.encode(acceleratorReason, forKey: .acceleratorReason)
        try c.encodeIfPresent(tscKHz, forKey: .tscKHz)
        try c.encode(kernel, forKey: .kernel)
        try c.encode(image, forKey: .image)
        try c.encode(memoryMiB, forKey: .memoryMiB)
        try c.encode(runs, forKey: .runs)
        try c.encode(warmups, forKey: .warmups)
        try c.encode(stasisCLI, forKey: .stasisCLI)
        try c.encodeIfPresent(commandLine, forKey: .commandLine)
        try c.encodeIfPresent(commandLineIdentical, forKey: .commandLineIdentical)
        try c.encodeIfPresent(baselineCommandLine, forKey: .baselineCommandLine)
        try c.encode(stasisBoot, forKey: .stasisBoot)
        try c.encode(baselineBoot, forKey: .baselineBoot)
        try c.encode(ratio, forKey: .ratio)
        try c.encode(phases, forKey: .phases)
        try c.encode(libraryBoot, forKey: .libraryBoot)
        try c.encode(exec, forKey: .exec)
        try c.encode(ping, forKey: .ping)
        try c.encodeIfPresent(memoryAfterBoot, forKey: .memoryAfterBoot)
        try c.encodeIfPresent(memory, forKey: .memory)
        try c.encode(targets, forKey: .targets)
    }

    /// The human-readable report.
    func render() -> String {
        let mark = { (met: Bool) in met ? "PASS" : "FAIL" }
        let t = targets
        var rows: [[String]] = [
            ["boot to first exec, median (ms)", fmt(stasisBoot.median), fmt(baselineBoot.median), String(format: "%.3f", ratio),
             "<= \(fmt(Self.bootRatioTarget, 2))x", mark(t[0].met)],
            ["boot to first exec, min-max (ms)", "\(fmt(stasisBoot.min))-\(fmt(stasisBoot.max))",
             "\(fmt(baselineBoot.min))-\(fmt(baselineBoot.max))", String(format: "%.3f-%.3f", stasisBoot.min / baselineBoot.max, stasisBoot.max / baselineBoot.min), "", ""],
            ["exec true p50 (ms)", fmt(exec.p50, 2), fmt(ping.p50, 2), String(format: "%.1f", exec.p50 / ping.p50), "<= \(fmt(Self.execP50Target))", mark(t[1].met)],
            ["exec true p90 (ms)", fmt(exec.p90, 2), fmt(ping.p90, 2), String(format: "%.1f", exec.p90 / ping.p90), "", ""],
            ["exec true p99 (ms)", fmt(exec.p99, 2), fmt(ping.p99, 2), String(format: "%.1f", exec.p99 / ping.p99), "<= \(fmt(Self.execP99Target))", mark(t[2].met)],
            ["exec true max (ms)", fmt(exec.max, 2), fmt(ping.max, 2), String(format: "%.1f", exec.max / ping.max), "", ""],
        ]
        if let m = memory {
            rows.append(["QEMU overhead Rss (MiB)", fmt(m.overhead, 1), "guest RAM \(fmt(m.guestRAM, 1))", "", "<= \(fmt(Self.overheadTarget))", mark(t[3].met)])
        }
        var out = """
        stasis-bench boot — \(date), \(cores) cores (load \(loadAverage)), \(qemu)
        accelerator \(accelerator) (\(acceleratorReason)), tsc_early_khz=\(tscKHz.map(String.init) ?? "-"), guest kernel \(kernel)
        image \(image), \(memoryMiB) MiB, \(runs) runs of each side (+\(warmups) warm-up), \(exec.count) execs/pings after \(BootBench.warmupExecs) warm-ups
        baseline: plain QEMU, same command line\(commandLineIdentical == true ? " (checked identical)" : " (DIFFERS: see JSON)"), spawn to "stasis-init: serving"; exec baseline: agent ping

        """
        out += table(["figure", "stasis", "baseline", "ratio", "target", "result"], rows)
        out += "\n\nWhere Stasis's boot time goes (medians, ms):\n"
        out += table(["phase", "ms"], [
            ["stasis run starts -> machine record written", fmt(phases.cliToRecord)],
            ["record -> QEMU spawned (overlay, command line)", fmt(phases.recordToQEMUSpawn)],
            ["QEMU spawned -> agent serving (kernel, initramfs, agent)", fmt(phases.qemuSpawnToServing)],
            ["agent serving -> stasis run -d returned (handshake, setClock)", fmt(phases.servingToRunReturned)],
            ["stasis run returned -> stasis exec true answered", fmt(phases.runReturnedToExecAnswered)],
            ["Stasis outside QEMU's boot (total - (serving - QEMU spawned))", fmt(phases.outsideQEMU)],
            ["plain QEMU spawned -> agent serving (baseline)", fmt(baselineBoot.median)],
            ["in-process Machine.boot, 1 sample (no CLI, no exec)", fmt(libraryBoot)],
        ])
        out += "\nratio with QEMU's boot noise cancelled: (baseline + outside) / baseline = "
        out += String(format: "%.3f", (baselineBoot.median + phases.outsideQEMU) / baselineBoot.median)
        if let a = memoryAfterBoot, let b = memory {
            out += "\n\nQEMU host memory (MiB; Pss = proportional share of pages shared with other processes):\n"
            let row = { (name: String, f: (QEMUMemory) -> String) in [name, f(a), f(b)] }
            out += table(["part", "after boot", "after round trips"], [
                row("total Rss") { fmt($0.totalRss, 1) },
                row("guest RAM (Rss of the memory file mapping)") { fmt($0.guestRAM, 1) },
                row("overhead = total - guest RAM") { fmt($0.overhead, 1) },
                row("  TCG translated-code buffer (none under KVM)") { fmt($0.tcgCodeBuffer, 1) },
                row("  kernel + initramfs files kept mapped (Pss)") { "\(fmt($0.bootImages, 1)) (\(fmt($0.bootImagesPss, 1)))" },
                row("  qemu binary + libraries (Pss)") { "\(fmt($0.qemuAndLibraries, 1)) (\(fmt($0.qemuAndLibrariesPss, 1)))" },
                row("  other anonymous (heap, stacks, devices)") { fmt($0.otherAnonymous, 1) },
                row("guest RAM file, blocks allocated") { fmt($0.guestRAMFileAllocated, 1) },
            ])
        }
        out += "\n\nTargets met: \(t.filter(\.met).count) of \(t.count)"
        for target in t where !target.met {
            out += "\n  missed: \(target.name) = \(fmt(target.value, 2)) \(target.unit) (target <= \(fmt(target.limit, 2)) \(target.unit))"
        }
        return out
    }
}
