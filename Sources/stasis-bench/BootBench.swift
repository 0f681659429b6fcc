import ArgumentParser
import Foundation
import Guest
import Images
import Machines
import StasisCore

/// `stasis-bench boot`: how long Stasis takes to give a usable machine, next to plain QEMU
/// booting the same thing; the exec round trip; and QEMU's memory overhead per machine.
struct BootBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "boot",
        abstract: "Boot to first exec against plain QEMU, exec round trip, and host memory overhead.",
        discussion: """
        (a) Stasis: from starting `stasis run -d --network none --memory M IMAGE` (the release CLI \
        next to this binary) to the first answered `stasis exec NAME true`; then `stasis rm -f`.
        (b) Baseline: QEMU alone, started with the same command line Stasis builds (without \
        -daemonize/-pidfile), from spawn until the console shows "stasis-init: serving". \
        The two sides alternate in every round, so drift on a shared host hits both.
        (c) Exec of `true` and ping round trips through Machine.withAgent on one machine.
        (d) Rss of that machine's QEMU beyond the guest RAM it maps, from /proc/PID/smaps.
        """
    )

    @Option(help: "Measured boots of each side.")
    var runs = 10

    @Option(help: "Unmeasured boots of each side first (they warm the page cache).")
    var warmups = 1

    @Option(help: ArgumentHelp("Guest memory.", valueName: "SIZE"))
    var memory = "512M"

    @Option(help: "Image to boot (default: a tiny busybox image, bench-bb, made on first use).")
    var image: String?

    @Option(help: "Timed exec and ping round trips (after 20 warm-ups each).")
    var execs = 1000

    @Option(help: ArgumentHelp("Seconds to wait for one boot.", valueName: "SECONDS"))
    var bootTimeout: Double = 120

    @Flag(help: "Print the results as JSON on stdout (the table then goes to stderr).")
    var json = false

    static let servingMarker = Data("stasis-init: serving".utf8)
    static let warmupExecs = 20

    func validate() throws {
        if runs < 1 { throw ValidationError("--runs must be at least 1") }
        if warmups < 0 { throw ValidationError("--warmups cannot be negative") }
        if execs < 1 { throw ValidationError("--execs must be at least 1") }
        _ = try MachineSpec.parseMemory(memory)
    }

    func run() async throws {
        let signals = installSignalCleanup()
        defer { withExtendedLifetime(signals) {} }
        let home = StasisHome.fromEnvironment()
        let tag = String(format: "%04x", UInt16.random(in: 0 ... .max))
        let prefix = "bench-\(tag)-"
        let work = home.tmp.appendingPathComponent("bench-\(tag)")
        Cleanup.shared.claimMachines(home: home, prefix: prefix)
        Cleanup.shared.adopt(folder: work)
        let report: BootReport
        do {
            report = try await measure(home: home, prefix: prefix, work: work)
        } catch {
            progress("stasis-bench: \(error)")
            Cleanup.shared.run()
            throw ExitCode(1)
        }
        Cleanup.shared.run()
        try printReport(report, json: json)
    }

    // MARK: - The whole measurement

    private func measure(home: StasisHome, prefix: String, work: URL) async throws -> BootReport {
        let cli = try Self.stasisBinary()
        let memoryMiB = try MachineSpec.parseMemory(memory)
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let imageName = try await prepareImage(home: home, work: work)
        let boot = try await BootArtifacts.resolve(home: home, image: imageName)
        let spec = MachineSpec(image: imageName, memoryMiB: memoryMiB, network: .none)
        let accelerator = AcceleratorChoice.choose(spec.accelerator)
        let tscKHz = AcceleratorChoice.hostTSCkHz()
        let qemuVersion = (try? await HostTool.run("qemu-system-x86_64", ["--version"]).standardOutput)?
            .split(separator: "\n").first.map(String.init) ?? "?"
        var report = BootReport(
            date: ISO8601DateFormatter().string(from: Date()), cores: ProcessInfo.processInfo.activeProcessorCount,
            loadAverage: (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?",
            qemu: qemuVersion, accelerator: accelerator.kind.rawValue, acceleratorReason: accelerator.reason,
            tscKHz: tscKHz, kernel: boot.kernelVersion, image: imageName, memoryMiB: memoryMiB,
            runs: runs, warmups: warmups, stasisCLI: cli.path)
        progress("stasis-bench boot: \(runs) runs (+\(warmups) warm-up) of each side, \(memoryMiB) MiB, image \(imageName), \(accelerator.kind.rawValue) (\(accelerator.reason)), kernel \(boot.kernelVersion)")

        var stasisRuns: [StasisRun] = []
        var baselineRuns: [Double] = []
        var baselineCommandLine: String?
        for round in 0 ..< warmups + runs {
            let measured = round >= warmups
            let label = measured ? "run \(round - warmups + 1)/\(runs)" : "warm-up \(round + 1)/\(warmups)"
            for side in round % 2 == 0 ? [0, 1] : [1, 0] {
                if side == 0 {
                    let result = try await stasisBoot(cli: cli, home: home, name: "\(prefix)\(round)", image: imageName, logs: work)
                    progress("\(label) stasis:   \(fmt(result.total)) ms (record \(fmt(result.record ?? .nan)), qemu spawned \(fmt(result.qemuSpawned ?? .nan)), serving \(fmt(result.serving ?? .nan)), run returned \(fmt(result.runReturned)))")
                    if report.commandLine == nil, let line = result.commandLine { report.commandLine = line }
                    if measured { stasisRuns.append(result) }
                } else {
                    let (ms, line) = try await baselineBoot(boot: boot, spec: spec, accelerator: accelerator, tscKHz: tscKHz,
                                                            name: "\(prefix)b\(round)", work: work)
                    progress("\(label) baseline: \(fmt(ms)) ms")
                    baselineCommandLine = line
                    if measured { baselineRuns.append(ms) }
                }
                try await Task.sleep(for: .milliseconds(300))
            }
        }
        report.commandLineIdentical = report.commandLine == baselineCommandLine
        if report.commandLineIdentical != true {
            progress("warning: the baseline's QEMU command line differs from Stasis's:\n  stasis:   \(report.commandLine ?? "?")\n  baseline: \(baselineCommandLine ?? "?")")
            report.baselineCommandLine = baselineCommandLine
        }
        report.stasisBoot = Summary(stasisRuns.map(\.total))
        report.baselineBoot = Summary(baselineRuns)
        report.ratio = report.stasisBoot.median / report.baselineBoot.median
        report.phases = StasisPhases(stasisRuns)

        try await execAndMemory(home: home, name: "\(prefix)exec", boot: boot, spec: spec, into: &report)
        return report
    }

    // MARK: - (a) Stasis through its CLI

    struct StasisRun {
        /// Milliseconds from spawning `stasis run` to each point.
        var total: Double
        var record: Double?
        var qemuSpawned: Double?
        var serving: Double?
        var runReturned: Double
        var commandLine: String?
    }

    private func stasisBoot(cli: URL, home: StasisHome, name: String, image: String, logs: URL) async throws -> StasisRun {
        let known = Set((try? FileManager.default.contentsOfDirectory(atPath: home.machines.path)) ?? [])
        let runErr = logs.appendingPathComponent("\(name).run.err")
        let run = try Child(cli, ["run", "-d", "--name", name, "--network", "none", "--memory", memory,
                                  "--boot-timeout", "\(Int(bootTimeout))", image], error: runErr)
        let clock = ContinuousClock()
        let start = clock.now
        try run.start()
        // Watches the machine's folder at the same 1 ms cadence the baseline watches its console.
        let watcher = Task { await Self.watch(home: home, known: known, name: name, start: start) }
        let status = await run.wait()
        let runReturned = clock.now - start
        guard status == 0 else {
            watcher.cancel()
            throw StasisError(.toolFailed, "stasis run failed (\(status)): \(Self.text(runErr))")
        }
        let execErr = logs.appendingPathComponent("\(name).exec.err")
        let deadline = clock.now + .seconds(30)
        var answered: Duration?
        while answered == nil {
            let exec = try Child(cli, ["exec", name, "true"], error: execErr)
            try exec.start()
            if await exec.wait() == 0 {
                answered = clock.now - start
            } else {
                guard clock.now < deadline else {
                    watcher.cancel()
                    throw StasisError(.timeout, "stasis exec \(name) true never succeeded: \(Self.text(execErr))")
                }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        watcher.cancel()
        let seen = await watcher.value
        var commandLine: String?
        if let id = seen.id {
            let paths = MachinePaths(home: home, id: id)
            if let text = try? String(contentsOf: paths.directory.appendingPathComponent("cmdline"), encoding: .utf8) {
                var line = text.trimmingCharacters(in: .whitespacesAndNewlines)
                let daemonize = " -daemonize -pidfile \(paths.pidFile.path)"
                if line.hasSuffix(daemonize) { line.removeLast(daemonize.count) }
                commandLine = Self.normalize(line, directory: paths.directory.path, id: id, name: name)
            }
        }
        let rmErr = logs.appendingPathComponent("\(name).rm.err")
        let rm = try Child(cli, ["rm", "-f", name], error: rmErr)
        try rm.start()
        guard await rm.wait() == 0 else { throw StasisError(.toolFailed, "stasis rm -f \(name) failed: \(Self.text(rmErr))") }
        return StasisRun(total: answered?.milliseconds ?? .nan, record: seen.record?.milliseconds, qemuSpawned: seen.qemuSpawned?.milliseconds,
                         serving: seen.serving?.milliseconds, runReturned: runReturned.milliseconds, commandLine: commandLine)
    }

    struct Seen: Sendable {
        var id: String?
        var record: Duration?
        var qemuSpawned: Duration?
        var serving: Duration?
    }

    /// When the machine's record appears, when Stasis writes the QEMU command line (just before it
    /// spawns QEMU) and when the console shows the agent serving.
    private static func watch(home: StasisHome, known: Set<String>, name: String, start: ContinuousClock.Instant) async -> Seen {
        let clock = ContinuousClock()
        let store = MachineStore(home: home)
        var seen = Seen()
        while !Task.isCancelled {
            if seen.id == nil {
                let entries = (try? FileManager.default.contentsOfDirectory(atPath: home.machines.path)) ?? []
                for entry in entries where !entry.hasPrefix(".") && !known.contains(entry) {
                    if let record = try? store.load(id: entry), record.name == name {
                        seen.id = entry
                        seen.record = clock.now - start
                    }
                }
            }
            if let id = seen.id {
                let paths = MachinePaths(home: home, id: id)
                if seen.qemuSpawned == nil, FileManager.default.fileExists(atPath: paths.directory.appendingPathComponent("cmdline").path) {
                    seen.qemuSpawned = clock.now - start
                }
                if seen.serving == nil, consoleShowsServing(paths.console) {
                    seen.serving = clock.now - start
                    return seen
                }
            }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return seen
    }

    static func consoleShowsServing(_ console: URL) -> Bool {
        guard let data = FileManager.default.contents(atPath: console.path) else { return false }
        return data.range(of: servingMarker) != nil
    }

    // MARK: - (b) Plain QEMU

    /// Boots QEMU alone with Stasis's own command line for an equivalent machine (same kernel,
    /// initramfs, image overlay, memory, accelerator, tsc_early_khz, devices), in the foreground:
    /// returns milliseconds from spawn to "stasis-init: serving" on the console, and the
    /// normalized command line.
    private func baselineBoot(boot: BootArtifacts, spec: MachineSpec, accelerator: AcceleratorChoice, tscKHz: Int?,
                              name: String, work: URL) async throws -> (Double, String) {
        let home = StasisHome(root: work.appendingPathComponent("baseline"))
        let id = (0 ..< 6).map { _ in String(format: "%02x", UInt8.random(in: 0 ... 255)) }.joined()
        let record = MachineRecord(id: id, name: name, spec: spec, autoRemove: false, engine: "qemu")
        let paths = MachinePaths(home: home, id: id)
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: paths.directory) }
        try paths.checkSocketPathLength()
        // Stasis makes this overlay inside its measured time; the baseline gets it for free.
        try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", boot.imageDisk.path, "-F", "raw", paths.disk.path])
        var arguments = QEMUCommandLine(record: record, paths: paths, boot: boot, accelerator: accelerator, tscKHz: tscKHz).arguments
        if let i = arguments.firstIndex(of: "-daemonize") { arguments.removeSubrange(i...) }
        guard let qemu = HostTool.which("qemu-system-x86_64") else {
            throw StasisError(.missingDependency, "qemu-system-x86_64 is not installed")
        }
        let commandLine = Self.normalize((["qemu-system-x86_64"] + arguments).joined(separator: " "),
                                         directory: paths.directory.path, id: id, name: name)
        let errors = paths.directory.appendingPathComponent("qemu.err")
        let child = try Child(URL(fileURLWithPath: qemu), arguments, error: errors)
        let clock = ContinuousClock()
        let start = clock.now
        try child.start()
        let deadline = start + .seconds(bootTimeout)
        while true {
            if Self.consoleShowsServing(paths.console) { break }
            if let status = child.exitStatus {
                throw StasisError(.toolFailed, "baseline QEMU exited (\(status)): \(Self.text(errors))\n\(Self.text(paths.console))")
            }
            if clock.now > deadline {
                child.kill()
                throw StasisError(.timeout, "baseline QEMU did not reach the agent in \(Int(bootTimeout)) s: \(Self.text(paths.console))")
            }
            try await Task.sleep(for: .milliseconds(1))
        }
        let elapsed = clock.now - start
        child.kill()
        _ = await child.wait()
        return (elapsed.milliseconds, commandLine)
    }

    // MARK: - (c) exec round trips and (d) memory

    private func execAndMemory(home: StasisHome, name: String, boot: BootArtifacts, spec: MachineSpec, into report: inout BootReport) async throws {
        progress("booting \(name) in-process (Machine.boot) for \(execs) exec and ping round trips")
        let store = MachineStore(home: home)
        let machine = Machine(record: try store.create(name: name, spec: spec, autoRemove: false), store: store)
        let clock = ContinuousClock()
        let start = clock.now
        _ = try await machine.boot(boot, timeout: .seconds(bootTimeout))
        report.libraryBoot = (clock.now - start).milliseconds
        guard let pid = await machine.record.pid else { throw StasisError(.internalError, "the booted machine has no pid") }
        report.memoryAfterBoot = try QEMUMemory.read(pid: pid, memoryFile: machine.paths.memory, bootFiles: [boot.kernel, boot.initramfs])
        let count = execs
        let (execTimes, pingTimes) = try await machine.withAgent(timeout: .seconds(60)) { agent in
            let request = ExecRequest(argv: ["true"])
            let clock = ContinuousClock()
            for _ in 0 ..< Self.warmupExecs {
                let result = try await agent.run(request)
                guard result.status.shellCode == 0 else { throw StasisError(.guestFailure, "`true` exited \(result.status.shellCode)") }
            }
            var execTimes: [Double] = []
            execTimes.reserveCapacity(count)
            for _ in 0 ..< count {
                let t = clock.now
                let result = try await agent.run(request)
                execTimes.append((clock.now - t).milliseconds)
                guard result.status.shellCode == 0 else { throw StasisError(.guestFailure, "`true` exited \(result.status.shellCode)") }
            }
            for _ in 0 ..< Self.warmupExecs { try await agent.ping() }
            var pingTimes: [Double] = []
            pingTimes.reserveCapacity(count)
            for _ in 0 ..< count {
                let t = clock.now
                try await agent.ping()
                pingTimes.append((clock.now - t).milliseconds)
            }
            return (execTimes, pingTimes)
        }
        report.exec = Latency(execTimes)
        report.ping = Latency(pingTimes)
        report.memory = try QEMUMemory.read(pid: pid, memoryFile: machine.paths.memory, bootFiles: [boot.kernel, boot.initramfs])
        try await machine.remove(force: true)
    }

    // MARK: - Helpers

    /// The release `stasis` next to this binary.
    static func stasisBinary() throws -> URL {
        var me = URL(fileURLWithPath: CommandLine.arguments[0])
        if !CommandLine.arguments[0].contains("/"),
           let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            me = URL(fileURLWithPath: exe)
        }
        let cli = me.resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("stasis")
        guard FileManager.default.isExecutableFile(atPath: cli.path) else {
            throw StasisError(.missingDependency, "no stasis binary next to stasis-bench at \(cli.path): build it with `swift build -c release --product stasis` in the same scratch folder")
        }
        return cli
    }

    /// The image to boot: --image, or bench-bb (static busybox, made once and reused).
    private func prepareImage(home: StasisHome, work: URL) async throws -> String {
        try await BenchImage.prepare(image, home: home, work: work)
    }

    /// A root file system with static busybox as every tool (as the VM tests make it).
    static func makeBusyboxRoot(at root: URL) throws {
        let fm = FileManager.default
        for dir in ["bin", "etc", "root", "tmp", "home/nobody"] {
            try fm.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        }
        try fm.copyItem(atPath: "/bin/busybox", toPath: root.appendingPathComponent("bin/busybox").path)
        let applets = ["sh", "ls", "cat", "echo", "sleep", "head", "wc", "sha256sum", "seq", "true", "false", "id",
                       "hostname", "date", "uname", "ip", "nc", "printf", "kill", "ps", "env", "pwd", "mkdir", "rm",
                       "dd", "sync", "yes", "tee", "tr", "grep", "test", "touch", "stat"]
        for applet in applets {
            try fm.createSymbolicLink(atPath: root.appendingPathComponent("bin/\(applet)").path, withDestinationPath: "busybox")
        }
        try "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/sh\n"
            .write(to: root.appendingPathComponent("etc/passwd"), atomically: true, encoding: .utf8)
    }

    /// A QEMU command line with the machine's folder, id and name replaced by placeholders, so
    /// that two machines' lines can be compared.
    static func normalize(_ line: String, directory: String, id: String, name: String) -> String {
        line.replacingOccurrences(of: directory, with: "$DIR")
            .replacingOccurrences(of: id, with: "$ID")
            .replacingOccurrences(of: name, with: "$NAME")
    }

    static func text(_ url: URL) -> String {
        let data = FileManager.default.contents(atPath: url.path) ?? Data()
        return String(decoding: data.suffix(4000), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
