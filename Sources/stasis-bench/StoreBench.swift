import ArgumentParser
import Foundation
import Guest
import Machines
import Snapshots
import StasisCore

/// `stasis-bench store`: what a snapshot's RAM costs in the chunk store, against plain zstd of
/// the same RAM, and what a restore from the store costs.
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Snapshot RAM in the chunk store against zstd -3 and zstd -19 --long of the raw RAM.",
        discussion: """
        Every run uses a fresh temporary $STASIS_HOME (sharing the real one's kernel, guest agent \
        and image), so its first snapshot finds an empty store. Per run:
        (1) boot a guest (--network none), let it idle, run `/bin/sh -c /bin/true` in it as warm \
        start does (WarmStart.prewarm), with --compact drop its page cache and zero its free \
        memory, snapshot it (stop mode): the boot snapshot. "made" times the snapshot alone; \
        the preparation is reported apart. \
        Baseline: its RAM written out raw, then `zstd -3` of that file (and, in the first run \
        only, `zstd -19 --long`), size and time.
        (2) restore it from the store and exec `true`: restore to first answered exec.
        (3) snapshot that restored machine at once: the no-change delta (new chunks' bytes).
        (4) restore again, write 1 MiB from /dev/urandom to tmpfs, start a process, snapshot: \
        the small-change delta, and what it stored beyond the 1 MiB.
        """
    )

    @Option(help: "Measured runs (each boots a guest).") var runs = 3
    @Option(help: "Image to boot.") var image = "debian"
    @Option(help: ArgumentHelp("Guest memory.", valueName: "SIZE")) var memory = "512M"
    @Option(help: "Seconds the booted guest idles before its snapshot.") var idle = 5.0
    @Flag(help: "Skip zstd -19 --long (about a minute per run on 2 cores).") var noZstd19 = false
    @Flag(help: "Compact the booted guest before its snapshot (drop page cache, zero free memory: `stasis snapshot --compact`).") var compact = false
    @Flag(help: "Print JSON on stdout (the table goes to stderr).") var json = false

    struct Run: Encodable {
        var bootRAMStoredBytes: Int
        var bootTotalStoredBytes: Int
        var bootChunks: Int
        var prepareMs: Double
        var takeMs: Double
        var zstd3Bytes: Int
        var zstd3Ms: Double
        var zstd19Bytes: Int?
        var zstd19Ms: Double?
        var restoreToExecMs: Double
        var noChangeAddedBytes: Int
        var smallChangeAddedBytes: Int
    }

    struct Report: BenchReport {
        var image: String
        var memoryMiB: Int
        var runs: [Run]
        var command: String

        static let bootTarget = 10_000_000.0
        static let takeTarget = 1000.0
        static let noChangeTarget = 100_000.0
        static let smallChangeTarget = 1_000_000.0
        static let restoreTarget = 150.0

        func median(_ values: [Double]) -> Double { Summary(values).median }

        func render() -> String {
            let boot = median(runs.map { Double($0.bootTotalStoredBytes) })
            let bootRAM = median(runs.map { Double($0.bootRAMStoredBytes) })
            let zstd3 = median(runs.map { Double($0.zstd3Bytes) })
            let zstd19 = median(runs.compactMap { $0.zstd19Bytes.map(Double.init) })
            let take = median(runs.map(\.takeMs))
            let prepare = median(runs.map(\.prepareMs))
            let zstd3Ms = median(runs.map(\.zstd3Ms))
            let restore = median(runs.map(\.restoreToExecMs))
            let noChange = median(runs.map { Double($0.noChangeAddedBytes) })
            let beyond = median(runs.map { Double($0.smallChangeAddedBytes - (1 << 20)) })
            func mb(_ bytes: Double) -> String { fmt(bytes / 1_000_000, 2) }
            func verdict(_ ok: Bool) -> String { ok ? "MET" : "MISSED" }
            return """
            stasis-bench store: \(image), \(memoryMiB) MiB guest, \(runs.count) runs (medians; MB = 10^6 bytes)
            \(table(["measure", "stasis", "baseline", "ratio", "target", ""], [
                ["boot snapshot stored, RAM (MB)", mb(bootRAM), "zstd -3: \(mb(zstd3))", fmt(bootRAM / zstd3, 2), "", ""],
                ["boot snapshot stored, RAM (MB)", mb(bootRAM), zstd19.isNaN ? "-" : "zstd -19 --long: \(mb(zstd19))", zstd19.isNaN ? "-" : fmt(bootRAM / zstd19, 2), "", ""],
                ["boot snapshot stored, all parts (MB)", mb(boot), "", "", "≤ 10 MB", verdict(boot <= Self.bootTarget)],
                ["boot snapshot made (ms)", fmt(take), "zstd -3 alone: \(fmt(zstd3Ms))", fmt(take / zstd3Ms, 2), "≤ 1000 ms", verdict(take <= Self.takeTarget)],
                ["  before it, prewarm (and --compact) (ms)", fmt(prepare), "", "", "", ""],
                ["restore from the store → first exec (ms)", fmt(restore), "", "", "≤ 150 ms", verdict(restore <= Self.restoreTarget)],
                ["no-change snapshot: new chunks (KB)", fmt(noChange / 1000), "", "", "≤ 100 KB (≤ 200 KB new session)", verdict(noChange <= Self.noChangeTarget)],
                ["1 MiB change: new chunks beyond 1 MiB (KB)", fmt(beyond / 1000), "", "", "≤ 1000 KB", verdict(beyond <= Self.smallChangeTarget)],
            ]))
            \(command)
            """
        }
    }

    func run() async throws {
        let memoryMiB = try MachineSpec.parseMemory(memory)
        let command = "stasis-bench store --runs \(runs) --image \(image) --memory \(memory)\(noZstd19 ? " --no-zstd19" : "")\(compact ? " --compact" : "")"
        try await BenchRun.main(json: json, quietTimeout: 60) { run, _ in
            var results: [Run] = []
            for index in 1 ... runs {
                progress("run \(index) of \(runs)")
                results.append(try await measure(run, index: index, memoryMiB: memoryMiB))
            }
            return Report(image: image, memoryMiB: memoryMiB, runs: results, command: command)
        }
    }

    private func measure(_ run: BenchRun, index: Int, memoryMiB: Int) async throws -> Run {
        let folder = run.work.appendingPathComponent("run-\(index)")
        let (home, source) = try await StasisGuest.bootInFreshHome(run, folder: folder, prefix: "store-", image: image,
                                                                   memoryMiB: memoryMiB, idle: idle)
        let snapshotter = Snapshotter(home: home)
        let clock = ContinuousClock()
        var start = clock.now
        await WarmStart.prewarm(source)  // as warm start makes boot snapshots
        if compact { try await Snapshotter.compact(source) }
        let prepareMs = (clock.now - start).milliseconds
        start = clock.now
        let bootSnapshot = try await snapshotter.take(source, tag: "boot", leaveRunning: false)
        let takeMs = (clock.now - start).milliseconds
        let ram = bootSnapshot.memoryAddedBytes ?? 0
        // A first snapshot's device state is a new base state in the chunk store, and a delta over itself.
        let total = ram + (bootSnapshot.stateBase?.storedSize ?? 0) + Int(bootSnapshot.stateStoredBytes + bootSnapshot.disk.allocated)
        progress("  boot snapshot: RAM \(ram) B in \(bootSnapshot.memoryFrames?.chunks.count ?? 0) chunks, all parts \(total) B, made in \(fmt(takeMs)) ms")

        // The baseline: the same RAM as one raw file, compressed whole.
        let raw = folder.appendingPathComponent("memory.raw")
        let snapshots = snapshotter.snapshots
        try await runBlocking { try snapshots.materializeMemory(bootSnapshot, to: raw) }
        let (zstd3Bytes, zstd3Ms) = try await compress(raw, ["-3"])
        var zstd19: (Int, Double)?
        if index == 1 && !noZstd19 { zstd19 = try await compress(raw, ["-19", "--long"]) }
        try FileManager.default.removeItem(at: raw)
        progress("  zstd -3: \(zstd3Bytes) B in \(fmt(zstd3Ms)) ms" + (zstd19.map { "; zstd -19 --long: \($0.0) B in \(fmt($0.1)) ms" } ?? ""))

        start = clock.now
        let quiet = try await snapshotter.restore(bootSnapshot.id, name: "store-quiet")
        try await StasisGuest.execTrue(quiet)
        let restoreMs = (clock.now - start).milliseconds
        let unchanged = try await snapshotter.take(quiet, tag: nil, leaveRunning: false)

        let busy = try await snapshotter.restore(bootSnapshot.id, name: "store-busy")
        try await busy.withAgent(timeout: .seconds(60)) { agent in
            _ = try await agent.run(ExecRequest(argv: ["sh", "-c", "head -c 1048576 /dev/urandom > /tmp/noise"]))
            _ = try await agent.spawn(ExecRequest(argv: ["sh", "-c", "while sleep 1; do :; done"]))
        }
        let changed = try await snapshotter.take(busy, tag: nil, leaveRunning: false)
        progress("  restore → exec \(fmt(restoreMs)) ms; no change +\(unchanged.memoryAddedBytes ?? 0) B; 1 MiB change +\(changed.memoryAddedBytes ?? 0) B")
        for name in ["store-source", "store-quiet", "store-busy"] {
            try? await Machine.open(name, store: MachineStore(home: home)).remove(force: true)
        }
        return Run(bootRAMStoredBytes: ram, bootTotalStoredBytes: total, bootChunks: bootSnapshot.memoryFrames?.chunks.count ?? 0,
                   prepareMs: prepareMs, takeMs: takeMs, zstd3Bytes: zstd3Bytes, zstd3Ms: zstd3Ms, zstd19Bytes: zstd19?.0, zstd19Ms: zstd19?.1,
                   restoreToExecMs: restoreMs, noChangeAddedBytes: unchanged.memoryAddedBytes ?? 0,
                   smallChangeAddedBytes: changed.memoryAddedBytes ?? 0)
    }

    /// Compresses `file` with the zstd tool; the output's size and the wall time.
    private func compress(_ file: URL, _ level: [String]) async throws -> (Int, Double) {
        let out = file.appendingPathExtension("zst")
        let clock = ContinuousClock()
        let start = clock.now
        try await HostTool.run("zstd", ["-q", "-f"] + level + [file.path, "-o", out.path])
        let ms = (clock.now - start).milliseconds
        let size = (try FileManager.default.attributesOfItem(atPath: out.path)[.size] as? NSNumber)?.intValue ?? 0
        try FileManager.default.removeItem(at: out)
        return (size, ms)
    }
}
