import Foundation
import Guest
import StasisCore

extension Machine {
    /// What `capture` wrote into a snapshot folder.
    public struct Capture: Sendable {
        /// The machine as it was when paused.
        public var record: MachineRecord
        public var state: URL
        /// The guest RAM file, or nil when RAM is in the state file or in `memoryImage`.
        public var memory: URL?
        /// The guest RAM copied into this process's memory (a `--leave-running` snapshot); valid
        /// only until `commit` returns.
        public var memoryImage: RAMImage?
        /// The disk: everything written since `diskBase`, with `diskBase` as its backing file.
        /// Written by `writeDisk`, which the committer calls once before it reads `disk`, so that
        /// it can do other work (the RAM) meanwhile.
        public var disk: URL
        /// Collapses the disk layers into `disk`; the committer calls it once. Returns true when
        /// the guest wrote nothing since `diskBase`: `disk` then holds no data of its own.
        public var writeDisk: @Sendable () async throws -> Bool
        public var diskBase: String
        /// The run-folder overlay the snapshot froze (the machine writes a new one on top of it
        /// when it keeps running).
        public var frozenDisk: URL
        public var paused: Duration
        public var engineVersion: String
        public var deviceLayout: [String]
    }

    /// A RAM file's bytes held in memory, laid out at the file's offsets; only `dataRanges` hold
    /// data (the rest reads as zeros and takes no memory).
    public struct RAMImage: @unchecked Sendable {  // read-only while its owner lives
        /// The whole file's address range.
        public let bytes: UnsafeRawBufferPointer
        /// The byte ranges that hold the file's data.
        public let dataRanges: [Range<Int>]
    }

    private var snapshotEngine: any SnapshottingEngine {
        get throws {
            guard let engine = store.engine as? any SnapshottingEngine else {
                throw StasisError(.unsupported, "the \(store.engine.name) engine cannot snapshot machines")
            }
            return engine
        }
    }

    /// A lower disk layer to collapse a snapshot's disk onto, instead of the machine's base: its
    /// path and format, and, when it is not in the machine's backing chain (a snapshot of this
    /// machine left running), the run-folder overlay whose content it equals.
    public struct CollapseTarget: Sendable {
        public var path: String
        public var format: String
        public var above: String?

        public init(path: String, format: String, above: String?) {
            self.path = path
            self.format = format
            self.above = above
        }
    }

    /// Pauses the machine, writes its whole execution state into `directory` (device state, RAM,
    /// disk) and hands it to `commit`. Without `leaveRunning` the machine is stopped afterwards,
    /// and `commit` runs while the guest is still paused: a crash at any moment leaves either a
    /// live machine or a committed snapshot, never neither. With it, the guest resumes on a new
    /// disk overlay after a short pause, and `commit` runs after that. `collapseOnto` (a path and
    /// its format) collapses the disk onto that lower layer instead of the machine's own base,
    /// to keep chains of layers short.
    public func capture(into directory: URL, leaveRunning: Bool, collapseOnto: CollapseTarget? = nil,
                        commit: @Sendable (Capture) async throws -> Void) async throws {
        let engine = try snapshotEngine
        let current = try refresh()
        guard current.state == .running, let pid = current.pid else {
            throw StasisError(.invalidState, "machine \(current.name) is \(current.state.rawValue): only a running machine can be snapshotted")
        }
        guard let ownBase = current.diskBase, let ownFormat = current.diskBaseFormat else {
            throw StasisError(.invalidState, "machine \(current.name) was started by an older stasis and cannot be snapshotted")
        }
        // After a snapshot that left the machine running, the next one holds only what was
        // written since, over that snapshot's disk: a session's turn snapshots stay small.
        let layered = collapseOnto == nil ? current.lastSnapshot.flatMap { last in
            FileManager.default.fileExists(atPath: last.disk) && FileManager.default.fileExists(atPath: last.layer) ? last : nil
        } : nil
        let (base, baseFormat) = collapseOnto.map { ($0.path, $0.format) } ?? layered.map { ($0.disk, "qcow2") } ?? (ownBase, ownFormat)
        let accel = AcceleratorChoice(kind: current.accelerator == "kvm" ? .kvm : .tcg, reason: "")
        let version = try await engine.version()
        let state = directory.appendingPathComponent("state")
        let memoryOut = directory.appendingPathComponent("memory")
        let diskOut = directory.appendingPathComponent("disk.qcow2")
        let memory = paths.memory(of: current)
        let ramInFile = current.memoryShared != false
        let layout = engine.deviceLayout(current, accelerator: accel)
        // The disk layers above the base (the frozen overlay and any kept in the run folder by
        // earlier snapshots) collapse into one file whose backing is the base. A lone overlay on
        // the machine's own base is one conversion; anything else goes through `DiskLayers`.
        let firstOverlay = paths.disk.lastPathComponent
        let collapse = { @Sendable (frozen: URL) async throws -> Bool in
            if let layered {
                try await DiskLayers.collapse(top: frozen, above: layered.layer, onto: layered.disk, format: "qcow2", into: diskOut)
            } else if let mark = collapseOnto?.above {
                try await DiskLayers.collapse(top: frozen, above: mark, onto: base, format: baseFormat, into: diskOut)
            } else if collapseOnto == nil, frozen.lastPathComponent == firstOverlay {
                try await HostTool.run("qemu-img", ["convert", "-U", "-O", "qcow2"] + DiskLayers.createOptions + ["-B", base, "-F", baseFormat, frozen.path, diskOut.path])
            } else {
                try await DiskLayers.collapse(top: frozen, onto: base, format: baseFormat, into: diskOut)
            }
            return try DiskLayers.holdsNoData(diskOut)
        }
        let capture = { @Sendable (paused: Duration, frozen: URL) in
            Capture(record: current, state: state, memory: ramInFile ? memoryOut : nil, memoryImage: nil, disk: diskOut,
                    writeDisk: { try await collapse(frozen) }, diskBase: base,
                    frozenDisk: frozen, paused: paused, engineVersion: version, deviceLayout: layout)
        }
        if leaveRunning {
            let next = "disk-\(UInt32.random(in: 0 ... .max)).qcow2"
            // Pages for the RAM copy are reserved before the pause and filled inside it.
            let ramCopy = ramInFile ? try PausedRAMCopy(source: memory) : nil
            defer { withExtendedLifetime(ramCopy) {} }  // `commit` reads its image
            let saved = try await engine.saveState(pid: pid, record: current, paths: paths, to: state,
                                                   leaveRunningOn: paths.directory.appendingPathComponent(next)) { _ in
                // The guest is paused: its RAM file holds exactly the state being saved.
                if let ramCopy { try await runBlocking { try ramCopy.copyWhilePaused() } }
            }
            try move(to: .running) { $0.diskFile = next }
            var captured = capture(saved.paused, saved.frozenDisk)
            captured.memory = nil
            captured.memoryImage = ramCopy?.image
            try await commit(captured)
            return
        }
        _ = try await engine.saveState(pid: pid, record: current, paths: paths, to: state, leaveRunningOn: nil) { saved in
            // Paused for good: the RAM file no longer changes, so the snapshot can share its inode.
            if ramInFile { try Self.link(memory, to: memoryOut) }
            try await commit(capture(saved.paused, saved.frozenDisk))
            // Stopping before QEMU is told to quit: anyone who finds its process gone from now on
            // (`stasis ps` reconciling records) takes it for stopped, not for crashed.
            try await self.move(to: .stopping)
        }
        // The snapshot is committed and QEMU told to quit: one slow to quit is killed.
        if !(await engine.waitForExit(pid: pid, machineID: id, timeout: .seconds(10))) {
            await engine.kill(pid: pid, paths: paths)
            _ = await engine.waitForExit(pid: pid, machineID: id, timeout: .seconds(5))
        }
        try move(to: .stopped) { $0.pid = nil }
    }

    /// Records `snapshot`, just committed from this machine left running, as the base of its
    /// next snapshot. A crash before this only makes that next snapshot bigger.
    public func noteSnapshot(_ snapshot: MachineRecord.LastSnapshot) throws {
        try move(to: .running) { $0.lastSnapshot = snapshot }
    }

    /// Lets a guest run again that an interrupted snapshot (its stasis process killed) left
    /// paused; returns false if the machine has no live process. A snapshot that was still being
    /// written is abandoned (its staging folder is swept later); the machine goes on as it was.
    public func resumeAfterInterruptedSnapshot() async throws -> Bool {
        let current = try store.reconcile(try refresh())
        guard current.state == .running else { return false }
        try await QMPClient.connect(socketPath: paths.qmpSocket.path) { qmp in
            let status = try await qmp.execute("query-status") as? [String: any Sendable]
            guard status?["status"] as? String != "running" else { return }
            // A migration that stasis started and never finished would keep the guest paused.
            _ = try? await qmp.execute("migrate_cancel")
            try await qmp.execute("cont")
        }
        return true
    }

    /// Where a restored machine's RAM comes from.
    public enum RestoredMemory: Sendable {
        /// In the device state stream; QEMU loads it into a new RAM file.
        case inState
        /// Its own sparse copy of a RAM file, mapped shared: cheap to snapshot again.
        case copied(from: URL)
        /// Its own RAM file, written by the caller (from a chunk store), mapped shared.
        case written(by: @Sendable (_ ramFile: URL) async throws -> Void)
        /// A RAM file mapped private, copy-on-write: forks of one snapshot share its pages.
        case mappedPrivately(URL)
        /// Served lazily: the closure starts a server mounted at the folder it is given, logging
        /// to the file it is given, and returns the file it serves, which the machine maps privately.
        case served(@Sendable (_ mountpoint: URL, _ log: URL) async throws -> URL)
    }

    /// Where a restored machine's device state comes from.
    public enum RestoredState: Sendable {
        /// A stream QEMU loads as it is (raw, or zstd-compressed).
        case file(URL)
        /// Written by the caller into the file it is given (a stored delta put back together),
        /// which QEMU loads and the restore then removes.
        case written(by: @Sendable (_ stateFile: URL) async throws -> Void)
    }

    /// What a restore needs from a snapshot.
    public struct RestoreInput: Sendable {
        public var snapshotID: String
        public var spec: MachineSpec
        public var state: RestoredState
        public var memory: RestoredMemory
        public var disk: URL
        public var generation: UInt64
        public var accelerator: String?
        /// The guest kernel running in the snapshot.
        public var kernel: String

        public init(snapshotID: String, spec: MachineSpec, state: RestoredState, memory: RestoredMemory, disk: URL, generation: UInt64, accelerator: String?, kernel: String) {
            self.kernel = kernel
            self.snapshotID = snapshotID
            self.spec = spec
            self.state = state
            self.memory = memory
            self.disk = disk
            self.generation = generation
            self.accelerator = accelerator
        }

        var ramInState: Bool {
            if case .inState = memory { return true }
            return false
        }
    }

    /// Creates a machine from a snapshot and brings it back running: clock set, RNG reseeded,
    /// generation bumped, hostname set to the new name.
    /// `autoRemove` is recorded as `stasis run --rm` records it.
    public static func restore(_ input: RestoreInput, name: String?, autoRemove: Bool = false, store: MachineStore) async throws -> Machine {
        guard let engine = store.engine as? any SnapshottingEngine else {
            throw StasisError(.unsupported, "the \(store.engine.name) engine cannot restore snapshots")
        }
        var record = try store.create(name: name, spec: input.spec, autoRemove: autoRemove)
        let paths = MachinePaths(home: store.home, id: record.id)
        let machine = Machine(record: record, store: store)
        let state: URL
        do {
            // Named as the snapshot's user before anything else, so `snapshot rm` sees it.
            record.diskBase = input.disk.path
            record.diskBaseFormat = "qcow2"
            record.restoredFrom = input.snapshotID
            try store.save(record)
            try await QCOW2Overlay.create(paths.disk, over: input.disk, format: "qcow2")
            record.kernel = input.kernel
            record.generation = input.generation + 1
            switch input.memory {
            case .inState:
                record.memoryShared = true  // RAM comes in the state stream, into a new file
            case .copied(let memory):
                try await copySparse(memory, to: paths.memory)
                record.memoryShared = true
            case .written(let write):
                try await write(paths.memory)
                record.memoryShared = true
            case .mappedPrivately(let memory):
                record.memoryFile = memory.path
                record.memoryShared = false
            case .served(let start):
                record.memoryFile = try await start(paths.memoryMount, paths.memoryServerLog).path
                record.memoryShared = false
            }
            switch input.state {
            case .file(let file):
                state = file
            case .written(let write):
                state = paths.restoredState
                try await write(state)
            }
            try store.save(record)
        } catch {
            try? store.delete(id: record.id)
            throw error
        }
        defer { if case .written = input.state { try? FileManager.default.removeItem(at: state) } }
        // The machine re-reads its record from the store before each state change.
        try await machine.resume(from: RestoreSource(state: state, ramInState: input.ramInState), engine: engine,
                                 accelerator: input.accelerator)
        return machine
    }

    private func resume(from source: RestoreSource, engine: any SnapshottingEngine, accelerator: String?) async throws {
        let accel = accelerator == "kvm" ? AcceleratorChoice(kind: .kvm, reason: "the snapshot was made under KVM")
                                         : AcceleratorChoice(kind: .tcg, reason: "the snapshot was made under TCG")
        try move(to: .starting) {
            $0.started = Date()
            $0.accelerator = accel.kind.rawValue
            $0.acceleratorReason = accel.reason
        }
        let pid: Int32
        do {
            pid = try await engine.restore(record, paths: paths, from: source, accelerator: accel)
        } catch {
            try? move(to: .failed) { $0.failure = "\(error)" }
            throw error
        }
        try move(to: .starting) { $0.pid = pid }
        let name = record.name
        let generation = record.generation ?? 1
        do {
            try await withAgent(timeout: .seconds(30)) { agent in
                try await agent.syncClock()
                try await agent.reseedRandom()
                try await agent.setHostname(name)
                try await agent.setGeneration(generation)
            }
            try move(to: .running)
        } catch {
            try await failStart(pid: pid, error)
        }
    }

    static func copySparse(_ source: URL, to target: URL) async throws {
        try await HostTool.run("cp", ["--sparse=always", source.path, target.path])
    }

    /// Hard-links `source` at `target` (same file system).
    public static func link(_ source: URL, to target: URL) throws {
        guard Foundation.link(source.path, target.path) == 0 else {
            throw StasisError(.ioFailure, "cannot link \(source.path) into the snapshot", cause: Errno())
        }
    }
}
