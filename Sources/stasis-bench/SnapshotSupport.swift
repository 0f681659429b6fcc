import ArgumentParser
import Foundation
import Guest
import Images
import Machines
import Snapshots
import StasisCore
import Synchronization

// What `stasis-bench snapshot`, `restore` and `fork` share: the run scaffolding (cleanup, JSON),
// the host's load while they run, the plain-QEMU baseline, and booting a Stasis machine.

/// A report a benchmark prints: a table, or JSON with --json.
protocol BenchReport: Encodable {
    func render() -> String
}

/// Prints `report`: the table on stdout, or JSON on stdout and the table on stderr.
func printReport(_ report: some BenchReport, json: Bool) throws {
    let text = report.render()
    guard json else { return print(text) }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    FileHandle.standardOutput.write(try encoder.encode(report) + Data("\n".utf8))
    progress(text)
}

/// Where one benchmark run keeps its things. Machines named `prefix…` in `home` and snapshots
/// taken of them are removed at the end, as is `work`.
struct BenchRun: Sendable {
    var home: StasisHome
    var prefix: String
    var work: URL
    var cli: URL?

    /// Runs `measure` with cleanup on every way out (success, error, Ctrl-C), then prints the
    /// report: the table on stdout, or JSON on stdout and the table on stderr.
    static func main<R: BenchReport>(json: Bool, quietTimeout: Double, _ measure: @escaping (BenchRun, LoadMonitor) async throws -> R) async throws {
        let home = StasisHome.fromEnvironment()
        let tag = String(format: "%04x", UInt16.random(in: 0 ... .max))
        let run = BenchRun(home: home, prefix: "bench-\(tag)-", work: home.tmp.appendingPathComponent("bench-\(tag)"), cli: nil)
        Cleanup.shared.claimMachines(home: home, prefix: run.prefix)
        Cleanup.shared.claimSnapshots()
        Cleanup.shared.adopt(folder: run.work)
        try await monitored(json: json, quietTimeout: quietTimeout) { monitor in
            try FileManager.default.createDirectory(at: run.work, withIntermediateDirectories: true)
            return try await measure(run, monitor)
        }
    }

    /// The frame of every benchmark: cleanup on signals, a quiet host before `measure` and the
    /// load monitor sampling during it, cleanup on every way out (a failure exits 1), then
    /// `afterCleanup` and the report.
    static func monitored<R: BenchReport>(json: Bool, quietTimeout: Double, afterCleanup: () -> Void = {},
                                          _ measure: (LoadMonitor) async throws -> R) async throws {
        let signals = installSignalCleanup()
        defer { withExtendedLifetime(signals) {} }
        let monitor = LoadMonitor()
        let report: R
        do {
            try await monitor.waitUntilQuiet(timeout: quietTimeout)
            monitor.start()
            report = try await measure(monitor)
            monitor.stop()
        } catch {
            monitor.stop()
            progress("stasis-bench: \(error)")
            Cleanup.shared.run()
            throw ExitCode(1)
        }
        Cleanup.shared.run()
        afterCleanup()
        try printReport(report, json: json)
    }
}

// MARK: - Host and load

/// The machine the benchmark ran on, for the report's header.
struct HostInfo: Encodable {
    var date: String
    var cores: Int
    var qemu: String
    var accelerator: String
    var acceleratorReason: String
    var kernel: String
    var image: String
    var load: LoadMonitor.Summary

    static func collect(kernel: String, image: String, accelerator: AcceleratorChoice, load: LoadMonitor.Summary) async -> HostInfo {
        let qemu = (try? await HostTool.run("qemu-system-x86_64", ["--version"]).standardOutput)?
            .split(separator: "\n").first.map(String.init) ?? "?"
        return HostInfo(date: ISO8601DateFormatter().string(from: Date()), cores: ProcessInfo.processInfo.activeProcessorCount,
                        qemu: qemu, accelerator: accelerator.kind.rawValue, acceleratorReason: accelerator.reason,
                        kernel: kernel, image: image, load: load)
    }

    var header: String {
        """
        \(date), \(cores) cores, \(qemu)
        accelerator \(accelerator) (\(acceleratorReason)), guest kernel \(kernel), image \(image)
        load: \(load.text)
        """
    }
}

/// Samples the host every 2 s while a benchmark runs: load average, and other engineers' heavy
/// jobs (Swift builds and tests), which distort timings on a shared 2-core host.
final class LoadMonitor: Sendable {
    static let heavyPatterns = ["swift-build", "swift-test", "xctest", "swift-frontend"]

    struct Summary: Encodable {
        var loadAtStart: String
        var loadAtEnd: String
        var maxLoad1: Double
        var samples: Int
        /// Samples in which a heavy job was running.
        var busySamples: Int
        /// Their names (first words of their command lines).
        var heavyJobsSeen: [String]
        /// How long the benchmark waited at the start for heavy jobs to finish.
        var waitedSeconds: Double

        var text: String {
            let busy = busySamples == 0 ? "no heavy job (swift-build/test, xctest, swift-frontend) seen in \(samples) samples"
                : "heavy jobs running in \(busySamples) of \(samples) samples: \(heavyJobsSeen.joined(separator: ", "))"
            return "load average \(loadAtStart) at start, \(loadAtEnd) at end, 1-min max \(fmt(maxLoad1, 2)); \(busy)"
                + (waitedSeconds > 0 ? "; waited \(fmt(waitedSeconds)) s for a quiet host first" : "")
        }
    }

    private struct State {
        var start = LoadMonitor.loadAverage()
        var maxLoad1 = 0.0
        var samples = 0
        var busy = 0
        var seen: Set<String> = []
        var waited = 0.0
        var task: Task<Void, Never>?
    }

    private let state = Mutex(State())

    static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
    }

    /// Heavy jobs now: the program names of processes matching `heavyPatterns`.
    static func heavyJobs() -> [String] {
        let me = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        var found: [String] = []
        for pid in entries.compactMap({ Int32($0) }) where pid != me {
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { continue }
            let words = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            let line = words.joined(separator: " ")
            if let hit = heavyPatterns.first(where: { line.contains($0) }) {
                found.append(hit)
            }
        }
        return found
    }

    /// Waits (polling every 5 s) until no heavy job runs, at most `timeout` seconds. Benchmarks call
    /// it before every round, so that a build started by someone else pauses the measurement.
    func waitUntilQuiet(timeout: Double) async throws {
        let clock = ContinuousClock()
        let start = clock.now
        var told = false
        while true {
            let jobs = Self.heavyJobs()
            if jobs.isEmpty { break }
            if (clock.now - start).milliseconds / 1000 >= timeout {
                progress("warning: heavy jobs still running after \(Int(timeout)) s (\(Set(jobs).sorted().joined(separator: ", "))): measuring anyway")
                break
            }
            if !told {
                progress("waiting for other heavy jobs to finish (\(Set(jobs).sorted().joined(separator: ", ")))…")
                told = true
            }
            try await Task.sleep(for: .seconds(5))
        }
        let waited = (clock.now - start).milliseconds / 1000
        state.withLock {
            if waited >= 1 { $0.waited += waited }
            if $0.samples == 0 { $0.start = Self.loadAverage() }
        }
    }

    func start() {
        let task = Task.detached { [self] in
            while !Task.isCancelled {
                sample()
                try? await Task.sleep(for: .seconds(2))
            }
        }
        state.withLock { $0.task = task }
    }

    func stop() {
        state.withLock { $0.task?.cancel() }
    }

    private func sample() {
        let load = Self.loadAverage()
        let jobs = Self.heavyJobs()
        state.withLock { s in
            s.samples += 1
            if let one = Double(load.split(separator: " ").first ?? "") { s.maxLoad1 = max(s.maxLoad1, one) }
            if !jobs.isEmpty {
                s.busy += 1
                s.seen.formUnion(jobs)
            }
        }
    }

    /// True if a heavy job is running right now (for progress lines).
    var busyNow: Bool { !Self.heavyJobs().isEmpty }

    var summary: Summary {
        state.withLock { s in
            Summary(loadAtStart: s.start, loadAtEnd: Self.loadAverage(), maxLoad1: s.maxLoad1, samples: s.samples,
                    busySamples: s.busy, heavyJobsSeen: s.seen.sorted(), waitedSeconds: s.waited)
        }
    }
}

// MARK: - The image

enum BenchImage {
    /// The image to boot: `image`, or bench-bb (static busybox, made once and reused).
    static func prepare(_ image: String?, home: StasisHome, work: URL) async throws -> String {
        if let image { return image }
        let name = "bench-bb"
        let store = ImageStore(home: home)
        do {
            _ = try await store.image(named: name)
            return name
        } catch let error as StasisError where error.code == .notFound {}
        progress("making image \(name) (static busybox)")
        let root = work.appendingPathComponent("bbroot")
        try BootBench.makeBusyboxRoot(at: root)
        _ = try await store.importRootfs(name: name, from: root) { progress("  \($0)") }
        try? FileManager.default.removeItem(at: root)
        return name
    }
}

// MARK: - Stasis side

/// Booting a machine through the library, and exec through its agent.
enum StasisGuest {
    /// Boots a new machine (in-process `Machine.boot`), then lets it sit idle for `idle` seconds.
    static func boot(_ run: BenchRun, name: String, spec: MachineSpec, boot: BootArtifacts, idle: Double,
                     timeout: Double) async throws -> Machine {
        let store = MachineStore(home: run.home)
        let machine = Machine(record: try store.create(name: name, spec: spec, autoRemove: false), store: store)
        _ = try await machine.boot(boot, timeout: .seconds(timeout))
        if idle > 0 { try await Task.sleep(for: .milliseconds(Int(idle * 1000))) }
        return machine
    }

    /// A guest of `image` booted (`--network none`) in a fresh temporary home under `folder`
    /// that shares `run`'s kernel, agent and image; its machines, named `prefix…`, are removed
    /// however the benchmark ends.
    static func bootInFreshHome(_ run: BenchRun, folder: URL, prefix: String, image: String, memoryMiB: Int,
                                idle: Double, zeroFreedMemory: Bool = true, deferWriteback: Bool = true) async throws -> (home: StasisHome, machine: Machine) {
        let home = try SessionBench.temporaryHome(in: folder, sharing: run.home, image: image)
        Cleanup.shared.claimMachines(home: home, prefix: prefix)
        let local = BenchRun(home: home, prefix: prefix, work: folder, cli: nil)
        let artifacts = try await BootArtifacts.resolve(home: home, image: image)
        let spec = MachineSpec(image: image, memoryMiB: memoryMiB, network: .none, zeroFreedMemory: zeroFreedMemory, deferWriteback: deferWriteback)
        return (home, try await Self.boot(local, name: "\(prefix)source", spec: spec, boot: artifacts, idle: idle, timeout: 300))
    }

    /// Runs `true` in the guest; throws unless it exits 0.
    static func execTrue(_ machine: Machine) async throws {
        let status = try await machine.withAgent(timeout: .seconds(30)) { agent in
            try await agent.run(ExecRequest(argv: ["true"])).status.shellCode
        }
        guard status == 0 else { throw StasisError(.guestFailure, "`true` exited \(status) in \(await machine.name)") }
    }

    /// Restores `snapshot` as `name`, execs `true`, removes the machine: the time from the call to
    /// the answered exec, in ms.
    static func restoreToExec(_ snapshotter: Snapshotter, snapshot: String, name: String, lazily: Bool = false) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let machine = try await snapshotter.restore(snapshot, name: name, lazily: lazily)
        try await execTrue(machine)
        let ms = (clock.now - start).milliseconds
        try await machine.remove(force: true)
        return ms
    }

    /// Processes left for a machine (QEMU's `-name stasis-ID`), and their total Rss in MiB.
    static func processesLeft(machineID: String) -> (count: Int, rssMiB: Double) {
        let pids = Cleanup.qemuProcesses(machineID: machineID)
        var kb = 0
        for pid in pids {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
                kb += Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0
            }
        }
        return (pids.count, Double(kb) / 1024)
    }
}

/// Bytes allocated on disk for a file, in MiB.
func allocatedMiB(_ url: URL) -> Double {
    var st = stat()
    return stat(url.path, &st) == 0 ? Double(st.st_blocks) * 512 / 1_048_576 : .nan
}

/// Logical size of a file, in MiB.
func sizeMiB(_ url: URL) -> Double {
    var st = stat()
    return stat(url.path, &st) == 0 ? Double(st.st_size) / 1_048_576 : .nan
}

/// Random 12 hex digits, like a machine id.
func randomID() -> String {
    (0 ..< 6).map { _ in String(format: "%02x", UInt8.random(in: 0 ... 255)) }.joined()
}

// MARK: - Plain QEMU baseline

/// QEMU alone, with the command line Stasis builds for an equivalent machine (same devices in the
/// same order, same accelerator and CPU model), except that guest RAM is QEMU's ordinary
/// anonymous memory (`-m` only, no memory-backend-file): the plain setup, whose migration
/// stream carries all of RAM. Started with -daemonize, as Stasis starts QEMU, and registered with
/// Cleanup by its `-name stasis-ID` before it is spawned.
struct PlainQEMU: Sendable {
    let record: MachineRecord
    let paths: MachinePaths
    let pid: Int32
    /// How long QEMU took to start (until -daemonize returned), ms.
    let startMilliseconds: Double

    /// Stasis's QEMU arguments for `record`, with guest RAM made anonymous.
    static func arguments(record: MachineRecord, paths: MachinePaths, boot: BootArtifacts, accelerator: AcceleratorChoice,
                          tscKHz: Int?, incoming: Bool) -> [String] {
        var a = QEMUCommandLine(record: record, paths: paths, boot: boot, accelerator: accelerator, tscKHz: tscKHz, incoming: incoming).arguments
        if let i = a.firstIndex(where: { $0.hasPrefix("memory-backend-file,") }), i > 0, a[i - 1] == "-object" {
            a.removeSubrange(i - 1 ... i)
        }
        if let i = a.firstIndex(of: "memory-backend=mem"), i > 0, a[i - 1] == "-machine" {
            a.removeSubrange(i - 1 ... i)
        }
        return a
    }

    /// A new folder for one plain QEMU under `root`, with its disk overlay on `backing`.
    static func prepare(root: URL, name: String, spec: MachineSpec, backing: URL, backingFormat: String) async throws -> (MachineRecord, MachinePaths) {
        let id = randomID()
        let record = MachineRecord(id: id, name: name, spec: spec, autoRemove: false, engine: "qemu")
        let paths = MachinePaths(home: StasisHome(root: root), id: id)
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true)
        try paths.checkSocketPathLength()
        try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", backing.path, "-F", backingFormat, paths.disk.path])
        return (record, paths)
    }

    /// Spawns QEMU (-daemonize) and returns once the parent has exited.
    static func start(record: MachineRecord, paths: MachinePaths, arguments: [String]) async throws -> PlainQEMU {
        guard Cleanup.shared.adopt(marker: "stasis-\(record.id)") else { throw CancellationError() }
        let clock = ContinuousClock()
        let t0 = clock.now
        do {
            try await HostTool.run("qemu-system-x86_64", arguments)
        } catch {
            throw StasisError(.toolFailed, "plain QEMU did not start: \(error)")
        }
        let started = (clock.now - t0).milliseconds
        guard let text = try? String(contentsOf: paths.pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw StasisError(.toolFailed, "plain QEMU wrote no pid file")
        }
        return PlainQEMU(record: record, paths: paths, pid: pid, startMilliseconds: started)
    }

    var isAlive: Bool { Foundation.kill(pid, 0) == 0 && !Cleanup.qemuProcesses(machineID: record.id).isEmpty }

    /// Waits until the guest agent answers a ping (after a boot).
    func waitForAgent(timeout: Double) async throws {
        let pid = self.pid
        try await AgentClient.connect(socketPath: paths.agentSocket(0).path, timeout: .seconds(timeout),
                                      isAlive: { Foundation.kill(pid, 0) == 0 }) { agent in
            try await agent.ping()
        }
    }

    /// Runs `true` through the agent (its first connection after a restore: hello, then exec).
    func execTrue(timeout: Double = 30) async throws {
        let pid = self.pid
        let status = try await AgentClient.connect(socketPath: paths.agentSocket(0).path, timeout: .seconds(timeout),
                                                   isAlive: { Foundation.kill(pid, 0) == 0 }) { agent in
            try await agent.run(ExecRequest(argv: ["true"])).status.shellCode
        }
        guard status == 0 else { throw StasisError(.guestFailure, "`true` exited \(status) in plain QEMU") }
    }

    /// Kills QEMU, waits for it to go, and deletes its folder.
    func remove() async {
        Foundation.kill(pid, SIGKILL)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(5)
        while clock.now < deadline, !Cleanup.qemuProcesses(machineID: record.id).isEmpty {
            try? await Task.sleep(for: .milliseconds(5))
        }
        Cleanup.shared.release(marker: "stasis-\(record.id)")
        try? FileManager.default.removeItem(at: paths.directory)
    }

    /// A plain migration of the whole guest to `file`: `stop`, `migrate exec:cat > file` (no
    /// x-ignore-shared: every RAM page is in the stream), `query-migrate` every 1 ms until
    /// completed, then fsync. Returns ms from `stop` to completed and to fsynced. QEMU is left
    /// paused (quit it with `remove`).
    func migrate(to file: URL) async throws -> (paused: Double, committed: Double) {
        let clock = ContinuousClock()
        let (t0, t1) = try await QMPClient.connect(socketPath: paths.qmpSocket.path) { qmp in
            let t0 = clock.now
            try await qmp.execute("stop")
            try await qmp.execute("migrate", ["uri": "exec:cat > '\(file.path)'"])
            while true {
                let status = try await qmp.execute("query-migrate") as? [String: any Sendable]
                switch status?["status"] as? String {
                case "completed": return (t0, clock.now)
                case "failed", "cancelled":
                    throw StasisError(.toolFailed, "plain migration failed: \(status?["error-desc"] as? String ?? "?")")
                default: try await Task.sleep(for: .milliseconds(1))
                }
            }
        }
        try AtomicFile.syncFile(file)
        let t2 = clock.now
        return ((t1 - t0).milliseconds, (t2 - t0).milliseconds)
    }

    /// Plain QEMU restoring a plain migration stream: spawned with `-incoming defer`, then
    /// `migrate-incoming exec:cat STREAM` and `query-status` every 1 ms until it leaves
    /// "inmigrate" (QEMU starts the guest by itself: no -S), then the first exec.
    struct Restore {
        var qemu: PlainQEMU
        /// ms from the clock's start: QEMU started, device state and RAM loaded (running), exec answered.
        var started: Double
        var loaded: Double
        var answered: Double
    }

    /// `record`/`paths` from `prepare` over the frozen source disk; the clock starts at the spawn.
    static func restore(record: MachineRecord, paths: MachinePaths, boot: BootArtifacts, accelerator: AcceleratorChoice,
                        stream: URL) async throws -> Restore {
        let arguments = Self.arguments(record: record, paths: paths, boot: boot, accelerator: accelerator, tscKHz: nil, incoming: true)
        let clock = ContinuousClock()
        let t0 = clock.now
        let qemu = try await start(record: record, paths: paths, arguments: arguments)
        let started = (clock.now - t0).milliseconds
        do {
            try await QMPClient.connect(socketPath: paths.qmpSocket.path) { qmp in
                try await qmp.execute("migrate-incoming", ["uri": "exec:cat '\(stream.path)'"])
                let deadline = clock.now + .seconds(120)
                while true {
                    guard clock.now < deadline else { throw StasisError(.timeout, "plain QEMU did not load the stream in 120 s") }
                    let status = try await qmp.execute("query-status") as? [String: any Sendable]
                    switch status?["status"] as? String {
                    case "inmigrate": try await Task.sleep(for: .milliseconds(1))
                    case "running": return
                    case "paused", "postmigrate", "prelaunch":
                        // Not expected without -S; resume so the comparison stays fair.
                        try await qmp.execute("cont")
                        return
                    case let other: throw StasisError(.toolFailed, "plain QEMU could not load the stream (status \(other ?? "?"))")
                    }
                }
            }
            let loaded = (clock.now - t0).milliseconds
            try await qemu.execTrue()
            let answered = (clock.now - t0).milliseconds
            return Restore(qemu: qemu, started: started, loaded: loaded, answered: answered)
        } catch {
            await qemu.remove()
            throw error
        }
    }
}

/// A booted plain-QEMU guest migrated to a file: the baseline's "snapshot", restored by
/// `PlainQEMU.restore` any number of times (each with its own overlay over the frozen disk).
struct PlainSnapshot: Sendable {
    var stream: URL
    var disk: URL
    var spec: MachineSpec
    var paused: Double
    var committed: Double
    var streamMiB: Double

    /// Boots plain QEMU from the image, lets it idle, migrates it to `folder/stream` and quits it.
    /// Its disk overlay stays in `folder` as the frozen disk restores sit on.
    static func make(folder: URL, name: String, spec: MachineSpec, boot: BootArtifacts, accelerator: AcceleratorChoice,
                     tscKHz: Int?, idle: Double, timeout: Double) async throws -> PlainSnapshot {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let (record, paths) = try await PlainQEMU.prepare(root: folder, name: name, spec: spec, backing: boot.imageDisk, backingFormat: "raw")
        let arguments = PlainQEMU.arguments(record: record, paths: paths, boot: boot, accelerator: accelerator, tscKHz: tscKHz, incoming: false)
        let qemu = try await PlainQEMU.start(record: record, paths: paths, arguments: arguments)
        do {
            try await qemu.waitForAgent(timeout: timeout)
            if idle > 0 { try await Task.sleep(for: .milliseconds(Int(idle * 1000))) }
            let stream = folder.appendingPathComponent("stream")
            let (paused, committed) = try await qemu.migrate(to: stream)
            // QEMU flushed the disk at `stop`; quit cleanly so the overlay is closed.
            _ = try? await QMPClient.connect(socketPath: paths.qmpSocket.path) { qmp in try await qmp.execute("quit") }
            let disk = folder.appendingPathComponent("frozen.qcow2")
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(10)
            while clock.now < deadline, !Cleanup.qemuProcesses(machineID: record.id).isEmpty {
                try await Task.sleep(for: .milliseconds(5))
            }
            try FileManager.default.moveItem(at: paths.disk, to: disk)
            await qemu.remove()
            return PlainSnapshot(stream: stream, disk: disk, spec: spec, paused: paused, committed: committed, streamMiB: sizeMiB(stream))
        } catch {
            await qemu.remove()
            throw error
        }
    }

    /// One restore of it, to the first answered exec. The overlay is made before the clock starts
    /// (as the boot benchmark gives the baseline its overlay); with `overlayTimed`, inside.
    func restore(root: URL, name: String, boot: BootArtifacts, accelerator: AcceleratorChoice,
                 overlayTimed: Bool = false) async throws -> PlainQEMU.Restore {
        let clock = ContinuousClock()
        let t0 = clock.now
        let (record, paths) = try await PlainQEMU.prepare(root: root, name: name, spec: spec, backing: disk, backingFormat: "qcow2")
        var result = try await PlainQEMU.restore(record: record, paths: paths, boot: boot, accelerator: accelerator, stream: stream)
        if overlayTimed {
            let overlay = (clock.now - t0).milliseconds - result.answered
            result.started += overlay
            result.loaded += overlay
            result.answered += overlay
        }
        return result
    }
}

// MARK: - Tables

/// One row of a results table: a figure for Stasis, the baseline's, their ratio, the target.
struct Figure: Encodable {
    var name: String
    var stasis: String
    var baseline: String
    var ratio: String
    var target: String
    /// nil: no target on this row.
    var met: Bool?

    init(_ name: String, _ stasis: String, _ baseline: String = "", ratio: String = "", target: String = "", met: Bool? = nil) {
        self.name = name
        self.stasis = stasis
        self.baseline = baseline
        self.ratio = ratio
        self.target = target
        self.met = met
    }

    static func render(_ rows: [Figure]) -> String {
        table(["figure", "stasis", "baseline", "ratio", "target", "result"],
              rows.map { [$0.name, $0.stasis, $0.baseline, $0.ratio, $0.target, $0.met.map { $0 ? "PASS" : "FAIL" } ?? ""] })
    }

    static func verdict(_ rows: [Figure]) -> String {
        let targeted = rows.filter { $0.met != nil }
        var out = "Targets met: \(targeted.filter { $0.met == true }.count) of \(targeted.count)"
        for row in targeted where row.met == false {
            out += "\n  missed: \(row.name) = \(row.stasis) (target \(row.target))"
        }
        return out
    }
}

func ratioText(_ a: Double, _ b: Double) -> String {
    a.isNaN || b.isNaN || b == 0 ? "" : String(format: "%.2f", a / b)
}

func rangeText(_ s: Summary, _ digits: Int = 0) -> String {
    "\(fmt(s.min, digits))-\(fmt(s.max, digits))"
}

/// Parses "256M,1G" into MiB.
func parseSizes(_ text: String) throws -> [Int] {
    try text.split(separator: ",").map { try MachineSpec.parseMemory(String($0).trimmingCharacters(in: .whitespaces)) }
}

// MARK: - CPU accounting

/// CPU time, in milliseconds, of processes: QEMU's (from /proc/PID/stat, 10 ms ticks) and this
/// benchmark's own and its waited-for children's (getrusage). On 2 cores, the wall time of work
/// that keeps both busy cannot be less than half its CPU time.
enum CPUTime {
    /// utime + stime of a process, and its minor page faults; nil once it is gone.
    static func of(pid: Int32) -> (ms: Double, minorFaults: Int)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after "(comm)": state is field 3; minflt 10, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let minflt = Int(fields[7]), let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ((utime + stime) * 1000 / tick, minflt)
    }

    /// This process (all threads) and its children that were waited for.
    static func processUsage() -> (own: Double, children: Double) {
        func ms(_ u: rusage) -> Double {
            Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000 + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1000
        }
        var own = rusage(), children = rusage()
        getrusage(RUSAGE_SELF.rawValue, &own)
        getrusage(RUSAGE_CHILDREN.rawValue, &children)
        return (ms(own), ms(children))
    }

    /// TCG's count of translated blocks so far (QMP `human-monitor-command info jit`), or nil.
    static func translatedBlocks(qmpSocket: URL) async -> Int? {
        let text = try? await QMPClient.connect(socketPath: qmpSocket.path) { qmp in
            try await qmp.execute("human-monitor-command", ["command-line": "info jit"]) as? String
        }
        guard let text = text ?? nil else { return nil }
        // HMP output ends its lines with "\r\n", a single Character in Swift: split on newlines.
        for line in text.components(separatedBy: .newlines) where line.hasPrefix("TB count") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).last ?? "")
        }
        return nil
    }
}

/// CPU spent during a piece of work, ms.
struct CPUSplit: Encodable {
    /// QEMU processes (the guests: TCG translation and execution, device emulation).
    var qemu = 0.0
    /// This benchmark process: the Stasis library (checksums, records, QMP and agent clients).
    var bench = 0.0
    /// Child processes it waited for: cp, qemu-img, qemu --version, QEMU before it daemonized.
    var children = 0.0
    var total: Double { qemu + bench + children }

    static func median(_ all: [CPUSplit]) -> CPUSplit {
        func m(_ f: (CPUSplit) -> Double) -> Double { Summary.median(all.map(f).sorted()) }
        return CPUSplit(qemu: m(\.qemu), bench: m(\.bench), children: m(\.children))
    }

    var text: String { "\(fmt(total)) ms CPU (QEMU \(fmt(qemu)), stasis-bench \(fmt(bench)), child processes \(fmt(children)))" }
}
