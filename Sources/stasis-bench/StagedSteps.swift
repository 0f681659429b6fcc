import Foundation
import Guest
import Machines
import Snapshots
import StasisCore
import Synchronization

// Stage timings of a snapshot and a restore. `Snapshotter.take` and `Snapshotter.restore` time
// nothing inside, and the benchmark must not change Sources/Machines or Sources/Snapshots, so
// these run the same steps, in the same order, through the public pieces they are made of
// (Machine, MachineStore, QEMUEngine.saveState, SnapshotStore.verify, QEMUCommandLine,
// QMPClient, AgentClient, FileDigest, AtomicFile, HostTool) and time each one. The benchmark runs
// them beside the real calls and prints both totals, so a reader can see that the copy costs
// what the original does.

/// Milliseconds spent in each step of one snapshot, as `Snapshotter.take` does them.
struct TakeStages: Encodable {
    /// Staging folder created, locked and renamed (with a folder fsync).
    var stage = 0.0
    /// `Machine.capture` before `stop`: record re-read and reconciled, `qemu-system-x86_64 --version`.
    var beforeStop = 0.0
    /// QMP connection, `migrate-set-capabilities`, `query-block`: saveState's time outside the pause.
    var qmpOutsidePause = 0.0
    /// `stop` → `quit` or `cont` returned: the guest's pause, as the manifest records it.
    var paused = 0.0
    /// Within the pause (leave-running only): `cp --sparse=always` of the RAM file.
    var ramCopyInPause: Double?
    /// After `quit` (stop mode): waiting for QEMU to exit (polled every 10 ms), two record writes.
    var qemuExitAndRecord: Double?
    /// Hard link of the RAM file (stop mode) or the record update (leave-running).
    var linkOrRecord = 0.0
    /// `qemu-img convert` of the frozen overlay into the snapshot's disk.qcow2.
    var diskConvert = 0.0
    /// FileDigest of each part.
    var digestState = 0.0
    var digestMemory = 0.0
    var digestDisk = 0.0
    /// fsync of each part (the RAM file's dirty pages reach the disk here).
    var fsyncParts = 0.0
    /// manifest.json written atomically (temp, fsync, rename, folder fsync), folder renamed and fsynced.
    var manifestAndRename = 0.0
    var total = 0.0
    /// `stop` → committed: total − stage − beforeStop − qmpOutsidePause (≈ the baseline's clock).
    var fromStop: Double { total - stage - beforeStop - qmpOutsidePause }

    static func median(_ all: [TakeStages]) -> TakeStages {
        func m(_ f: (TakeStages) -> Double?) -> Double { Summary.median(all.compactMap(f).filter { !$0.isNaN }.sorted()) }
        var out = TakeStages()
        out.stage = m(\.stage)
        out.beforeStop = m(\.beforeStop)
        out.qmpOutsidePause = m(\.qmpOutsidePause)
        out.paused = m(\.paused)
        out.ramCopyInPause = all.contains { $0.ramCopyInPause != nil } ? m(\.ramCopyInPause) : nil
        out.qemuExitAndRecord = all.contains { $0.qemuExitAndRecord != nil } ? m(\.qemuExitAndRecord) : nil
        out.linkOrRecord = m(\.linkOrRecord)
        out.diskConvert = m(\.diskConvert)
        out.digestState = m(\.digestState)
        out.digestMemory = m(\.digestMemory)
        out.digestDisk = m(\.digestDisk)
        out.fsyncParts = m(\.fsyncParts)
        out.manifestAndRename = m(\.manifestAndRename)
        out.total = m(\.total)
        return out
    }

    var rows: [[String]] {
        [
            ["staging folder (mkdir, flock, rename, fsync)", fmt(stage, 1)],
            ["before stop: record reconcile, qemu --version", fmt(beforeStop, 1)],
            ["QMP connect, capabilities, query-block", fmt(qmpOutsidePause, 1)],
            ["guest paused: stop -> quit (stop) / cont (leave)", fmt(paused, 1)],
            ["  of which RAM file cp --sparse (leave)", ramCopyInPause.map { fmt($0, 1) } ?? "-"],
            ["QEMU exit (polled every 10 ms) + 2 record writes (stop)", qemuExitAndRecord.map { fmt($0, 1) } ?? "-"],
            ["hard link of RAM file (stop) / record update (leave)", fmt(linkOrRecord, 1)],
            ["qemu-img convert of the disk layer", fmt(diskConvert, 1)],
            ["digest: state", fmt(digestState, 1)],
            ["digest: memory", fmt(digestMemory, 1)],
            ["digest: disk", fmt(digestDisk, 1)],
            ["fsync of the parts", fmt(fsyncParts, 1)],
            ["manifest written, folder renamed (fsyncs)", fmt(manifestAndRename, 1)],
            ["total (take() called -> committed)", fmt(total, 1)],
            ["from stop -> committed", fmt(fromStop, 1)],
        ]
    }
}

/// A Double set from inside a @Sendable closure.
final class TimeBox: Sendable {
    private let value = Mutex(Double.nan)
    func set(_ v: Double) { value.withLock { $0 = v } }
    var get: Double { value.withLock { $0 } }
}

enum StagedTake {
    /// `Snapshotter.take(machine, leaveRunning:)` step by step, writing into a staging folder
    /// under `folder` (same file system as the snapshots) instead of the snapshot store.
    static func run(_ machine: Machine, leaveRunning: Bool, folder: URL) async throws -> TakeStages {
        let engine = QEMUEngine()
        let clock = ContinuousClock()
        var s = TakeStages()
        let t0 = clock.now
        var mark = t0
        func lap() -> Double {
            let now = clock.now
            defer { mark = now }
            return (now - mark).milliseconds
        }
        // SnapshotStore.stage
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let id = randomID()
        let fresh = folder.appendingPathComponent(".new-\(id)")
        try FileManager.default.createDirectory(at: fresh, withIntermediateDirectories: true)
        let lock = try FileLock.acquire(fresh.appendingPathComponent(".lock"))
        defer { withExtendedLifetime(lock) {} }
        let staged = folder.appendingPathComponent(".staging-\(id)")
        try AtomicFile.rename(fresh, over: staged)
        s.stage = lap()
        // Machine.capture, before the pause
        let current = try await machine.refresh()
        guard current.state == .running, let pid = current.pid, let base = current.diskBase, let baseFormat = current.diskBaseFormat else {
            throw StasisError(.invalidState, "machine \(current.name) is not a running machine that can be snapshotted")
        }
        _ = try await engine.version()
        s.beforeStop = lap()
        let paths = machine.paths
        let state = staged.appendingPathComponent("state")
        let memoryOut = staged.appendingPathComponent("memory")
        let diskOut = staged.appendingPathComponent("disk.qcow2")
        let memory = paths.memory(of: current)
        let saved: SavedState
        if leaveRunning {
            let next = "disk-\(UInt32.random(in: 0 ... .max)).qcow2"
            let copy = TimeBox()
            saved = try await engine.saveState(pid: pid, record: current, paths: paths, to: state,
                                               leaveRunningOn: paths.directory.appendingPathComponent(next)) { _ in
                let c = ContinuousClock()
                let t = c.now
                try await HostTool.run("cp", ["--sparse=always", memory.path, memoryOut.path])
                copy.set((c.now - t).milliseconds)
            }
            let inSaveState = lap()
            s.paused = saved.paused.milliseconds
            s.qmpOutsidePause = inSaveState - s.paused
            s.ramCopyInPause = copy.get
            var record = try machine.store.load(id: machine.id)
            record.state = .running
            record.diskFile = next
            try machine.store.save(record)
            s.linkOrRecord = lap()
        } else {
            saved = try await engine.saveState(pid: pid, record: current, paths: paths, to: state, leaveRunningOn: nil) { _ in }
            let inSaveState = lap()
            s.paused = saved.paused.milliseconds
            s.qmpOutsidePause = inSaveState - s.paused
            if !(await engine.waitForExit(pid: pid, machineID: machine.id, timeout: .seconds(10))) {
                await engine.kill(pid: pid, paths: paths)
                _ = await engine.waitForExit(pid: pid, machineID: machine.id, timeout: .seconds(5))
            }
            var record = try machine.store.load(id: machine.id)
            record.state = .stopping
            try machine.store.save(record)
            record.state = .stopped
            record.pid = nil
            try machine.store.save(record)
            s.qemuExitAndRecord = lap()
            guard Foundation.link(memory.path, memoryOut.path) == 0 else {
                throw StasisError(.ioFailure, "cannot link \(memory.path)", cause: Errno())
            }
            s.linkOrRecord = lap()
        }
        try await HostTool.run("qemu-img", ["convert", "-U", "-O", "qcow2", "-B", base, "-F", baseFormat, saved.frozenDisk.path, diskOut.path])
        s.diskConvert = lap()
        // Snapshotter.take: the parts, in its order (state, memory, disk)
        _ = try FileDigest.of(state)
        s.digestState = lap()
        _ = try FileDigest.of(memoryOut)
        s.digestMemory = lap()
        _ = try FileDigest.of(diskOut)
        s.digestDisk = lap()
        // SnapshotStore.commit: fsync parts in manifest order (state, disk, memory), manifest, rename
        for part in [state, diskOut, memoryOut] { try AtomicFile.syncFile(part) }
        s.fsyncParts = lap()
        let manifest: [String: String] = ["id": id, "machine": current.name]
        try AtomicFile.writeJSON(manifest, to: staged.appendingPathComponent("manifest.json"))
        let final = folder.appendingPathComponent(id)
        try AtomicFile.rename(staged, over: final)
        try? FileManager.default.removeItem(at: final.appendingPathComponent(".lock"))
        s.manifestAndRename = lap()
        s.total = (clock.now - t0).milliseconds
        return s
    }
}

/// Milliseconds spent in each step of one restore, as `Snapshotter.restore` does them.
struct RestoreStages: Encodable {
    /// How many staged restores a median was taken over (1 for a single one).
    var runs = 1
    /// `SnapshotStore.find`: listing (with the staging sweep) and reading manifests.
    var find = 0.0
    /// `SnapshotStore.verify`: size and FileDigest of every part.
    var verify = 0.0
    /// `Snapshotter.checkCompatible`: `qemu-system-x86_64 --version`, device layout, kernel.
    var compatibility = 0.0
    /// `MachineStore.create` and the disk overlay (`QCOW2Overlay`).
    var recordAndOverlay = 0.0
    /// The snapshot's RAM file written from the chunk store (or `cp --sparse=always` of a
    /// snapshot that keeps a plain one).
    var ramCopy = 0.0
    /// The device state put back together from a stored delta over its base (0 for a
    /// snapshot that keeps it whole).
    var stateWrite = 0.0
    /// Record writes before QEMU starts (restored-from fields, starting).
    var recordWrites = 0.0
    /// `QEMUEngine.launch`: command line written, QEMU spawned, until -daemonize returned.
    var qemuStart = 0.0
    /// QMP connect, capabilities, `migrate-incoming`, `query-status` every 1 ms until it leaves
    /// "inmigrate": device state loaded.
    var deviceStateLoaded = 0.0
    /// `cont`: the guest runs.
    var cont = 0.0
    /// Record saved with the pid, agent connection and hello, setClock, reseedRandom, setHostname,
    /// setGeneration, record saved running: what `Machine.restore` does after `cont`.
    var agentSteps = 0.0
    /// A second agent connection (hello) and `true` exec'd: the first answered exec.
    var firstExec = 0.0
    var total = 0.0
    /// Another exec on the same machine right after the first (not in `total`): how much of the
    /// first is the guest running code for the first time since the restore.
    var secondExec = 0.0
    /// What QEMU did during the agent steps, the first exec and the second: its CPU time (ms),
    /// host minor page faults (guest RAM pages touched for the first time since the restore),
    /// and blocks of guest code TCG translated (`info jit` TB count). Read between the steps,
    /// outside their times.
    var agentWork = GuestWork()
    var firstExecWork = GuestWork()
    var secondExecWork = GuestWork()

    struct GuestWork: Encodable {
        var qemuCPU = Double.nan
        var minorFaults = Double.nan
        var translatedBlocks = Double.nan

        static func between(_ a: (cpu: (ms: Double, minorFaults: Int)?, tb: Int?), _ b: (cpu: (ms: Double, minorFaults: Int)?, tb: Int?)) -> GuestWork {
            var w = GuestWork()
            if let x = a.cpu, let y = b.cpu {
                w.qemuCPU = y.ms - x.ms
                w.minorFaults = Double(y.minorFaults - x.minorFaults)
            }
            if let x = a.tb, let y = b.tb { w.translatedBlocks = Double(y - x) }
            return w
        }

        static func median(_ all: [GuestWork]) -> GuestWork {
            func m(_ f: (GuestWork) -> Double) -> Double { Summary.median(all.map(f).filter { !$0.isNaN }.sorted()) }
            return GuestWork(qemuCPU: m(\.qemuCPU), minorFaults: m(\.minorFaults), translatedBlocks: m(\.translatedBlocks))
        }
    }

    static func median(_ all: [RestoreStages]) -> RestoreStages {
        func m(_ f: (RestoreStages) -> Double) -> Double { Summary.median(all.map(f).filter { !$0.isNaN }.sorted()) }
        return RestoreStages(runs: all.count, find: m(\.find), verify: m(\.verify), compatibility: m(\.compatibility), recordAndOverlay: m(\.recordAndOverlay),
                             ramCopy: m(\.ramCopy), stateWrite: m(\.stateWrite), recordWrites: m(\.recordWrites), qemuStart: m(\.qemuStart),
                             deviceStateLoaded: m(\.deviceStateLoaded), cont: m(\.cont), agentSteps: m(\.agentSteps),
                             firstExec: m(\.firstExec), total: m(\.total), secondExec: m(\.secondExec),
                             agentWork: .median(all.map(\.agentWork)), firstExecWork: .median(all.map(\.firstExecWork)),
                             secondExecWork: .median(all.map(\.secondExecWork)))
    }
}

enum StagedRestore {
    /// `Snapshotter.restore(id, name:)` then one exec, step by step. Leaves the machine running;
    /// the caller removes it.
    static func run(_ snapshotter: Snapshotter, id: String, name: String) async throws -> (RestoreStages, Machine) {
        let clock = ContinuousClock()
        var s = RestoreStages()
        let t0 = clock.now
        var mark = t0
        func lap() -> Double {
            let now = clock.now
            defer { mark = now }
            return (now - mark).milliseconds
        }
        let manifest = try snapshotter.snapshots.find(id)
        s.find = lap()
        try snapshotter.snapshots.verify(manifest, framesPresent: false)  // as an eager restore does
        s.verify = lap()
        try await snapshotter.checkCompatible(manifest)
        s.compatibility = lap()
        // Machine.restore
        let store = snapshotter.machines
        let dir = snapshotter.snapshots.directory(manifest.id)
        var record = try store.create(name: name, spec: manifest.spec, autoRemove: false)
        let paths = MachinePaths(home: store.home, id: record.id)
        let disk = dir.appendingPathComponent(manifest.disk.file)
        try await QCOW2Overlay.create(paths.disk, over: disk, format: "qcow2")
        s.recordAndOverlay = lap()
        if manifest.memoryFrames != nil {
            let snapshots = snapshotter.snapshots
            try await runBlocking { try snapshots.materializeMemory(manifest, to: paths.memory) }
        } else if let memory = manifest.memory {
            try await HostTool.run("cp", ["--sparse=always", dir.appendingPathComponent(memory.file).path, paths.memory.path])
        } else {
            throw StasisError(.unsupported, "the staged restore handles snapshots with a memory part only")
        }
        s.ramCopy = lap()
        let stateFile = manifest.stateBase == nil ? dir.appendingPathComponent(manifest.state.file) : paths.restoredState
        if manifest.stateBase != nil {
            let snapshots = snapshotter.snapshots
            try await runBlocking { try snapshots.restoreDeviceState(manifest, to: stateFile) }
        }
        defer { if manifest.stateBase != nil { try? FileManager.default.removeItem(at: stateFile) } }
        s.stateWrite = lap()
        record.diskBase = disk.path
        record.diskBaseFormat = "qcow2"
        record.restoredFrom = manifest.id
        record.kernel = manifest.kernel
        record.generation = manifest.generation + 1
        record.memoryShared = true
        try store.save(record)
        // Machine.resume: starting
        let accel = AcceleratorChoice(kind: manifest.engine.accelerator == "kvm" ? .kvm : .tcg, reason: "the snapshot was made under \(manifest.engine.accelerator.uppercased())")
        record.state = .starting
        record.started = Date()
        record.accelerator = accel.kind.rawValue
        record.acceleratorReason = accel.reason
        try store.save(record)
        s.recordWrites = lap()
        // QEMUEngine.restore → launch
        let commandLine = QEMUCommandLine(record: record, paths: paths,
                                          boot: BootArtifacts(kernel: URL(fileURLWithPath: "/"), initramfs: URL(fileURLWithPath: "/"),
                                                              kernelVersion: "", imageDisk: URL(fileURLWithPath: "/")),
                                          accelerator: accel, tscKHz: nil, incoming: true)
        for i in 0 ..< 4 { unlink(paths.agentSocket(i).path) }
        unlink(paths.qmpSocket.path)
        unlink(paths.pidFile.path)
        try AtomicFile.write(Data(((["qemu-system-x86_64"] + commandLine.arguments).joined(separator: " ") + "\n").utf8),
                             to: paths.directory.appendingPathComponent("cmdline"))
        try await HostTool.run("qemu-system-x86_64", commandLine.arguments)
        guard let text = try? String(contentsOf: paths.pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw StasisError(.toolFailed, "QEMU wrote no pid file")
        }
        s.qemuStart = lap()
        let loaded = TimeBox()
        let ramInState = false
        let c = ContinuousClock()
        let start = c.now
        try await QMPClient.connect(socketPath: paths.qmpSocket.path) { qmp in
            try await qmp.execute("migrate-set-capabilities", ["capabilities": [["capability": "x-ignore-shared", "state": !ramInState] as [String: any Sendable]] as [any Sendable]])
            try await qmp.execute("migrate-incoming", ["uri": "exec:cat '\(stateFile.path)'"])
            let deadline = c.now + .seconds(120)
            while true {
                guard c.now < deadline else { throw StasisError(.timeout, "QEMU did not load the state in 120 s") }
                let status = try await qmp.execute("query-status") as? [String: any Sendable]
                switch status?["status"] as? String {
                case "inmigrate": try await Task.sleep(for: .milliseconds(1))
                case "paused", "postmigrate", "prelaunch":
                    loaded.set((c.now - start).milliseconds)
                    try await qmp.execute("cont")
                    return
                case "running":
                    loaded.set((c.now - start).milliseconds)
                    return
                case let other: throw StasisError(.toolFailed, "QEMU could not load the state (status \(other ?? "?"))")
                }
            }
        }
        let qmpTime = lap()
        s.deviceStateLoaded = loaded.get
        s.cont = qmpTime - loaded.get
        // Counters between the steps, read outside their times.
        func counters() async -> (cpu: (ms: Double, minorFaults: Int)?, tb: Int?) {
            let tb = await CPUTime.translatedBlocks(qmpSocket: paths.qmpSocket)
            let cpu = CPUTime.of(pid: pid)
            mark = clock.now
            return (cpu, tb)
        }
        let afterCont = await counters()
        // Machine.resume after cont
        record.pid = pid
        try store.save(record)
        let machine = Machine(record: record, store: store)
        let generation = record.generation ?? 1
        try await machine.withAgent(timeout: .seconds(30)) { agent in
            try await agent.syncClock()
            try await agent.reseedRandom()
            try await agent.setHostname(name)
            try await agent.setGeneration(generation)
        }
        record = try store.load(id: record.id)
        record.state = .running
        try store.save(record)
        s.agentSteps = lap()
        let afterAgent = await counters()
        try await StasisGuest.execTrue(machine)
        s.firstExec = lap()
        let afterFirst = await counters()
        try await StasisGuest.execTrue(machine)
        s.secondExec = lap()
        let afterSecond = await counters()
        s.agentWork = .between(afterCont, afterAgent)
        s.firstExecWork = .between(afterAgent, afterFirst)
        s.secondExecWork = .between(afterFirst, afterSecond)
        s.total = s.find + s.verify + s.compatibility + s.recordAndOverlay + s.ramCopy + s.stateWrite + s.recordWrites + s.qemuStart
            + s.deviceStateLoaded + s.cont + s.agentSteps + s.firstExec
        return (s, machine)
    }
}
