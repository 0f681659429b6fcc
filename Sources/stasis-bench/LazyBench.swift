import ArgumentParser
import Foundation
import Guest
import LazyMemory
import Machines
import Snapshots
import StasisCore

/// `stasis-bench lazy`: restore from the chunk store eagerly (the whole RAM file written first)
/// against lazily (served through FUSE, a frame decompressed when the guest first touches it).
struct LazyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lazy",
        abstract: "Eager against lazy restore from the chunk store, for a small idle guest and a big busy one.",
        discussion: """
        Two guests, each booted (--network none) in a fresh temporary $STASIS_HOME that shares the \
        real one's kernel, agent and image, prewarmed as warm start does, and snapshotted (stop \
        mode):
        (1) --small (default 512 MiB), idle;
        (2) --large (default 4 GiB) with a working set: --touch MiB (default 200) from \
        /dev/urandom written to a tmpfs in the guest before the snapshot. \
        Then, --runs times per guest, sides alternating: restore (eager, then lazy) and exec \
        `true`: restore to first answered exec. The baseline is the eager restore of the small \
        guest, measured in the same run. Last, one stop-mode snapshot of an eagerly and of a \
        lazily restored small guest: what a lazy machine's next snapshot costs (its RAM is mapped \
        privately, so the snapshot carries it in the device state stream).
        """
    )

    @Option(help: "Restores per side and guest.") var runs = 5
    @Option(help: "Image to boot.") var image = "debian"
    @Option(help: ArgumentHelp("The small guest's memory.", valueName: "SIZE")) var small = "512M"
    @Option(help: ArgumentHelp("The large guest's memory.", valueName: "SIZE")) var large = "4G"
    @Option(help: "MiB the large guest writes to tmpfs before its snapshot.") var touch = 200
    @Option(help: "Seconds a booted guest idles before its snapshot.") var idle = 3.0
    @Flag(help: "Print JSON on stdout (the table goes to stderr).") var json = false

    struct Side: Encodable {
        var eagerMs: [Double] = []
        var lazyMs: [Double] = []
        var storedBytes = 0
    }

    struct Report: BenchReport {
        var image: String
        var smallMiB: Int
        var largeMiB: Int
        var touchMiB: Int
        var small: Side
        var large: Side
        var nextSnapshotEager: (ms: Double, bytes: Int)
        var nextSnapshotLazy: (ms: Double, bytes: Int)
        var command: String

        static let largeRatioTarget = 1.5

        enum CodingKeys: String, CodingKey { case image, smallMiB, largeMiB, touchMiB, small, large, command }

        func render() -> String {
            let smallEager = Summary(small.eagerMs), smallLazy = Summary(small.lazyMs)
            let largeEager = Summary(large.eagerMs), largeLazy = Summary(large.lazyMs)
            let ratio = largeLazy.median / smallEager.median
            func row(_ name: String, _ summary: Summary, baseline: Summary?) -> [String] {
                [name, fmt(summary.median), "\(fmt(summary.min))-\(fmt(summary.max))",
                 baseline.map { fmt(summary.median / $0.median, 2) } ?? "-"]
            }
            return """
            stasis-bench lazy: \(image); restore from the store to the first answered exec, medians of \(small.eagerMs.count) runs (ms)
            \(table(["restore", "median", "min-max", "ratio to eager \(smallMiB) MiB"], [
                row("eager, \(smallMiB) MiB idle (baseline)", smallEager, baseline: smallEager),
                row("lazy,  \(smallMiB) MiB idle", smallLazy, baseline: smallEager),
                row("eager, \(largeMiB) MiB, \(touchMiB) MiB touched", largeEager, baseline: smallEager),
                row("lazy,  \(largeMiB) MiB, \(touchMiB) MiB touched", largeLazy, baseline: smallEager),
            ]))
            stored RAM: \(fmt(Double(small.storedBytes) / 1e6, 2)) MB (\(smallMiB) MiB guest), \(fmt(Double(large.storedBytes) / 1e6, 2)) MB (\(largeMiB) MiB guest)
            target: lazy restore of the \(largeMiB) MiB guest ≤ \(fmt(Self.largeRatioTarget, 1)) × the \(smallMiB) MiB one: \(fmt(ratio, 2)) — \(ratio <= Self.largeRatioTarget ? "MET" : "MISSED")
            the next stop-mode snapshot of a restored \(smallMiB) MiB guest: eager \(fmt(nextSnapshotEager.ms)) ms, \(fmt(Double(nextSnapshotEager.bytes) / 1e6, 2)) MB new; lazy \(fmt(nextSnapshotLazy.ms)) ms, \(fmt(Double(nextSnapshotLazy.bytes) / 1e6, 2)) MB new
            \(command)
            """
        }
    }

    func run() async throws {
        guard MemoryServer.isAvailable else {
            throw StasisError(.unsupported, "lazy restore needs /dev/fuse and stasis-memfs (swift build -c release --product stasis-memfs)")
        }
        let smallMiB = try MachineSpec.parseMemory(small)
        let largeMiB = try MachineSpec.parseMemory(large)
        let command = "stasis-bench lazy --runs \(runs) --image \(image) --small \(small) --large \(large) --touch \(touch)"
        try await BenchRun.main(json: json, quietTimeout: 60) { run, _ in
            let (smallHome, smallSnapshot) = try await bootSnapshot(run, name: "small", memoryMiB: smallMiB, touchMiB: 0)
            let (largeHome, largeSnapshot) = try await bootSnapshot(run, name: "large", memoryMiB: largeMiB, touchMiB: touch)
            var smallSide = Side(storedBytes: smallSnapshot.memoryAddedBytes ?? 0)
            var largeSide = Side(storedBytes: largeSnapshot.memoryAddedBytes ?? 0)
            for round in 1 ... runs {
                for lazily in round % 2 == 0 ? [true, false] : [false, true] {
                    let smallMs = try await restoreToExec(home: smallHome, snapshot: smallSnapshot.id, lazily: lazily, name: "small")
                    let largeMs = try await restoreToExec(home: largeHome, snapshot: largeSnapshot.id, lazily: lazily, name: "large")
                    if lazily { smallSide.lazyMs.append(smallMs); largeSide.lazyMs.append(largeMs) }
                    else { smallSide.eagerMs.append(smallMs); largeSide.eagerMs.append(largeMs) }
                    progress("round \(round)/\(runs) \(lazily ? "lazy " : "eager"): \(smallMiB) MiB \(fmt(smallMs)) ms, \(largeMiB) MiB \(fmt(largeMs)) ms")
                }
            }
            let eagerNext = try await nextSnapshot(home: smallHome, snapshot: smallSnapshot.id, lazily: false)
            let lazyNext = try await nextSnapshot(home: smallHome, snapshot: smallSnapshot.id, lazily: true)
            return Report(image: image, smallMiB: smallMiB, largeMiB: largeMiB, touchMiB: touch, small: smallSide, large: largeSide,
                          nextSnapshotEager: eagerNext, nextSnapshotLazy: lazyNext, command: command)
        }
    }

    /// Boots a guest in a fresh home, fills `touchMiB` of tmpfs in it, and snapshots it.
    private func bootSnapshot(_ run: BenchRun, name: String, memoryMiB: Int, touchMiB: Int) async throws -> (StasisHome, SnapshotManifest) {
        let folder = run.work.appendingPathComponent(name)
        let (home, machine) = try await StasisGuest.bootInFreshHome(run, folder: folder, prefix: "lazy-", image: image,
                                                                    memoryMiB: memoryMiB, idle: idle)
        await WarmStart.prewarm(machine)
        if touchMiB > 0 {
            let fill = "mkdir -p /fill && mount -t tmpfs -o size=\(touchMiB + 16)m fill /fill && head -c \(touchMiB)M /dev/urandom > /fill/data"
            let status = try await machine.withAgent(timeout: .seconds(600)) { agent in
                try await agent.run(ExecRequest(argv: ["sh", "-c", fill])).status.shellCode
            }
            guard status == 0 else { throw StasisError(.guestFailure, "filling \(touchMiB) MiB of tmpfs exited \(status)") }
        }
        let snapshot = try await Snapshotter(home: home).take(machine, tag: name, leaveRunning: false)
        progress("\(name): \(memoryMiB) MiB guest snapshotted, \(snapshot.memoryAddedBytes ?? 0) B of RAM stored")
        return (home, snapshot)
    }

    private func restoreToExec(home: StasisHome, snapshot: String, lazily: Bool, name: String) async throws -> Double {
        try await StasisGuest.restoreToExec(Snapshotter(home: home), snapshot: snapshot, name: "lazy-\(name)-\(lazily ? "l" : "e")", lazily: lazily)
    }

    /// Restores `snapshot` and snapshots it again at once (stop mode): time and new bytes.
    private func nextSnapshot(home: StasisHome, snapshot: String, lazily: Bool) async throws -> (ms: Double, bytes: Int) {
        let snapshotter = Snapshotter(home: home)
        let machine = try await snapshotter.restore(snapshot, name: "lazy-next-\(lazily ? "l" : "e")", lazily: lazily)
        try await StasisGuest.execTrue(machine)
        let clock = ContinuousClock()
        let start = clock.now
        let next = try await snapshotter.take(machine, tag: nil, leaveRunning: false)
        let ms = (clock.now - start).milliseconds
        let bytes = (next.memoryAddedBytes ?? 0) + Int(next.stateStoredBytes) + Int(next.disk.allocated)
        try await machine.remove(force: true)
        try? await snapshotter.snapshots.remove(next.id, force: true, machines: [])
        return (ms, bytes)
    }
}
