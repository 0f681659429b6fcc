import ChunkStore
import Foundation
import LazyMemory
import Images
import Machines
import StasisCore
import Synchronization

/// Takes snapshots of running machines and brings them back, as one machine or many.
public struct Snapshotter: Sendable {
    public let snapshots: SnapshotStore
    public let machines: MachineStore

    /// How many disk layers of one tier may sit on top of each other. A snapshot's disk is a
    /// layer over its parent's (tier 0); when that would make this many tier-0 layers in a row,
    /// they are merged instead into one layer of tier 1 over what lies below them, and so on up
    /// (an LSM-style tiering): a chain of N snapshots stays (fanout − 1) × log_fanout(N) layers
    /// deep, and each written byte is copied log_fanout(N) times, not once per later snapshot.
    public var diskMergeFanout: Int

    public init(home: StasisHome, machines: MachineStore? = nil, diskMergeFanout: Int = 4) {
        self.snapshots = SnapshotStore(home: home)
        self.machines = machines ?? MachineStore(home: home)
        self.diskMergeFanout = max(2, diskMergeFanout)
    }

    /// Shrinks what the next snapshot of `machine` stores: the guest drops its clean page cache
    /// and its kernel zeroes every free page, so only memory in use is stored. Costs seconds
    /// under TCG (3.7 s for a 512 MiB guest) and pays off when the guest has read or freed a lot
    /// (a build, an install); for a freshly booted guest it saves about 2 % (docs/chunk-store.md),
    /// so warm start does not use it. An agent too old for it is left as it is.
    public static func compact(_ machine: Machine) async throws {
        do {
            try await machine.withAgent { agent in try await agent.zeroFreeMemory(dropCaches: true) }
        } catch let error as StasisError where error.code == .unsupported {
            return
        }
    }

    /// Snapshots a running machine. Without `leaveRunning` it is stopped afterwards.
    public func take(_ machine: Machine, tag: String?, leaveRunning: Bool) async throws -> SnapshotManifest {
        let (id, staged, lock) = try snapshots.stage()
        defer { withExtendedLifetime(lock) {} }
        let committed = Mutex<(manifest: SnapshotManifest, frozenDisk: URL)?>(nil)
        let placement = await diskPlacement(for: machine)
        do {
            try await machine.capture(into: staged, leaveRunning: leaveRunning, collapseOnto: placement.collapseOnto) { capture in
                // RAM goes into the chunk store; gc waits for this commit before it looks. Taken
                // before the parent is read: the packs and base list it names stay until then.
                let writers = try await runBlocking { [snapshots] in try FileLock.acquire(snapshots.chunkWritersLock, shared: true) }
                defer { withExtendedLifetime(writers) {} }
                let (parent, parentBase) = try parent(of: capture.record)
                // The disk layer is written while the RAM is cut: they are independent.
                async let diskHoldsNoData: Bool = capture.writeDisk()
                // Frames the guest changed a few pages of since its parent cost those pages.
                let kernel = capture.record.kernel
                let cut: CutResult? = if let image = capture.memoryImage {
                    try await storeMemory(image, base: parent, kernel: kernel)
                } else if let memory = capture.memory {
                    try await storeMemory(memory, base: parent, kernel: kernel)
                } else {
                    nil
                }
                // A layer the guest wrote nothing into is its parent's disk again: share that file.
                let sharedDisk = try await diskHoldsNoData ? try shareDisk(capture, of: parent) : nil
                // Device state alone (RAM not in its stream) is kept as a delta over a base state.
                let stateBase = cut == nil ? nil : try await runBlocking { [snapshots] in
                    try snapshots.storeDeviceState(capture.state, over: parent?.stateBase)
                }
                var manifest = try manifest(id: id, tag: tag, capture: capture, parent: parent, sharingDiskOf: sharedDisk)
                manifest.stateBase = stateBase
                try snapshots.inlineDeviceState(&manifest, from: capture.state)
                manifest.diskLevel = sharedDisk.map(\.diskLevel) ?? (placement.level == 0 ? nil : placement.level)
                if leaveRunning { manifest.frozenLayer = capture.frozenDisk.path }
                if let cut {
                    manifest.memoryFrames = cut.frames
                    manifest.memoryAddedBytes = cut.newBytes
                    manifest.memory = nil
                }
                let written = try snapshots.commit(manifest, staged: staged, parent: parent.map { ($0, parentBase) })
                committed.withLock { $0 = (written, capture.frozenDisk) }
            }
        } catch {
            // Committed but the machine failed to stop afterwards: the snapshot is whole; keep it.
            if let done = committed.withLock({ $0 }) { return done.manifest }
            try? FileManager.default.removeItem(at: staged)
            throw error
        }
        guard let (manifest, frozenDisk) = committed.withLock({ $0 }) else {
            throw StasisError(.internalError, "the snapshot of \(await machine.name) was never committed")
        }
        if leaveRunning {
            // The machine's next snapshot is a layer over this one (a failure here only makes it bigger).
            let disk = snapshots.directory(manifest.id).appendingPathComponent(manifest.disk.file).path
            try? await machine.noteSnapshot(.init(id: manifest.id, disk: disk, layer: frozenDisk.path))
        }
        return manifest
    }

    /// The newest snapshot of this machine, else the one it was restored from, with the base
    /// list its frame list is a delta over: read once, for the manifest's `parent`, as the base
    /// RAM frames are patched over, and as the base the new frame list is a delta over.
    private func parent(of record: MachineRecord) throws -> (SnapshotManifest?, BaseList?) {
        let found = try record.lastSnapshot.flatMap { try? snapshots.manifestAndBase($0.id) }
            ?? record.restoredFrom.map { try snapshots.manifestAndBase($0) }
        return (found?.manifest, found?.base)
    }

    /// Replaces the empty layer `capture` wrote with a hard link to `parent`'s disk, when that is
    /// the layer it sits on: the same content, at no cost. Returns the parent (nil: kept as is).
    /// Snapshot disks are never written in place except by `remove --force`'s rebase, which
    /// gives every snapshot sharing the file the same new backing, as they all have it.
    private func shareDisk(_ capture: Machine.Capture, of parent: SnapshotManifest?) throws -> SnapshotManifest? {
        guard let parent else { return nil }
        let parentDisk = snapshots.directory(parent.id).appendingPathComponent(parent.disk.file)
        guard capture.diskBase == parentDisk.path else { return nil }
        try FileManager.default.removeItem(at: capture.disk)
        try Machine.link(parentDisk, to: capture.disk)
        return parent
    }

    private func manifest(id: String, tag: String?, capture: Machine.Capture, parent: SnapshotManifest?,
                          sharingDiskOf sharing: SnapshotManifest?) throws -> SnapshotManifest {
        let record = capture.record
        // A shared disk adds nothing: its bytes are counted with the snapshot that wrote them.
        let disk = try sharing.map { SnapshotManifest.Part(file: capture.disk.lastPathComponent, size: $0.disk.size, allocated: 0, digest: $0.disk.digest) }
            ?? SnapshotStore.part(capture.disk)
        return SnapshotManifest(
            format: SnapshotManifest.currentFormat, id: id, tag: tag, created: Date(),
            machineID: record.id, machineName: record.name, spec: record.spec,
            engine: .init(name: machines.engine.name, version: capture.engineVersion,
                          accelerator: record.accelerator ?? "tcg", deviceLayout: capture.deviceLayout),
            kernel: record.kernel ?? "unknown", image: record.spec.image, diskBase: sharing?.diskBase ?? capture.diskBase,
            parent: parent?.id, generation: record.generation ?? 0,
            pausedMilliseconds: capture.paused.milliseconds,
            state: try SnapshotStore.part(capture.state), memory: nil,
            disk: disk)
    }

    /// Where the next snapshot's disk goes: a tier-0 layer over the machine's base (nil), or,
    /// when that would make `diskMergeFanout` layers of one tier in a row, merged with them onto
    /// what lies below them, one tier up (repeating while the tier above fills too).
    private func diskPlacement(for machine: Machine) async -> (collapseOnto: Machine.CollapseTarget?, level: Int) {
        let record = await machine.record
        let layeredOn = record.lastSnapshot.map(\.disk).flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        guard let base = layeredOn ?? record.diskBase, layeredOn != nil || record.restoredFrom != nil else { return (nil, 0) }
        let (layers, bottom) = snapshots.diskLayers(onto: base)
        var level = 0
        var below = 0
        while true {
            var run = 0
            while below + run < layers.count, (layers[below + run].manifest.diskLevel ?? 0) == level { run += 1 }
            guard run + 1 >= diskMergeFanout else { break }
            below += run
            level += 1
        }
        guard below > 0 else { return (nil, 0) }
        let target: Machine.CollapseTarget
        if below < layers.count {
            // A snapshot of this machine, left running, is not in its disk's backing chain: the
            // overlay it froze is, and marks where the layers to copy begin.
            let under = layers[below]
            let mark = under.manifest.machineID == record.id ? under.manifest.frozenLayer : nil
            target = .init(path: under.path, format: "qcow2", above: mark)
        } else {
            target = .init(path: bottom, format: bottom.hasSuffix(".qcow2") ? "qcow2" : "raw", above: nil)
        }
        guard FileManager.default.fileExists(atPath: target.path), target.above.map(FileManager.default.fileExists) ?? true else {
            return (nil, 0)
        }
        return (target, level)
    }

    /// Cuts a RAM file into the chunk store and removes it: only frames no earlier snapshot
    /// stored cost anything, frames that differ from `base`'s in a few pages cost the pages, and
    /// the guest `kernel`'s pages are stored as deltas against its vmlinux.
    /// New page patches go into one pack of the chunk store.
    func storeMemory(_ file: URL, base: SnapshotManifest? = nil, kernel: String?) async throws -> CutResult {
        let cut = try await cutMemory(base: base, kernel: kernel) { cutter, baseFrames, reference in
            try cutter.cut(file, base: baseFrames, reference: reference, packing: true)
        }
        try FileManager.default.removeItem(at: file)
        return cut
    }

    /// Stores RAM copied into memory (a snapshot of a machine left running) as `storeMemory` does a file.
    func storeMemory(_ image: Machine.RAMImage, base: SnapshotManifest?, kernel: String?) async throws -> CutResult {
        try await cutMemory(base: base, kernel: kernel) { cutter, baseFrames, reference in
            try cutter.cut(memory: image.bytes, dataRanges: image.dataRanges, name: "the RAM copy", base: baseFrames,
                           reference: reference, packing: true)
        }
    }

    private func cutMemory(base: SnapshotManifest?, kernel: String?,
                           _ body: @escaping @Sendable (FrameCutter, FrameList?, FrameReference?) throws -> CutResult) async throws -> CutResult {
        let chunks = try snapshots.chunkStore()
        let reference = kernel.flatMap(snapshots.kernelReference)
        let baseFrames = base?.memoryFrames
        return try await runBlocking {
            try body(try FrameCutter(store: chunks, frameSize: SnapshotStore.memoryFrameSize), baseFrames, reference)
        }
    }

    /// Checks that this host can load the snapshot: same engine, engine version, device layout
    /// and guest kernel; names the difference when not.
    public func checkCompatible(_ manifest: SnapshotManifest) async throws {
        guard let engine = machines.engine as? any SnapshottingEngine else {
            throw StasisError(.unsupported, "the \(machines.engine.name) engine cannot restore snapshots")
        }
        guard manifest.engine.name == engine.name else {
            throw StasisError(.invalidState, "snapshot \(manifest.id) was made by the \(manifest.engine.name) engine, not \(engine.name)")
        }
        let version = try await engine.version()
        guard manifest.engine.version == version else {
            throw StasisError(.invalidState, "snapshot \(manifest.id) was made by \(manifest.engine.version); this host has \(version), which cannot load its device state")
        }
        var probe = MachineRecord(id: "000000000000", name: "probe", spec: manifest.spec, autoRemove: false, engine: engine.name)
        probe.accelerator = manifest.engine.accelerator
        let layout = engine.deviceLayout(probe, accelerator: AcceleratorChoice(kind: manifest.engine.accelerator == "kvm" ? .kvm : .tcg, reason: ""))
        guard layout == manifest.engine.deviceLayout else {
            var theirs = manifest.engine.deviceLayout.filter { !layout.contains($0) }
            var ours = layout.filter { !manifest.engine.deviceLayout.contains($0) }
            if theirs.isEmpty && ours.isEmpty { (theirs, ours) = (manifest.engine.deviceLayout, layout) }  // same devices, other order
            throw StasisError(.invalidState, "snapshot \(manifest.id) has a different device layout: it has [\(theirs.joined(separator: ", "))], this stasis builds [\(ours.joined(separator: ", "))]")
        }
        if let kernel = BootArtifacts.installedKernelVersion(home: snapshots.home), kernel != manifest.kernel {
            throw StasisError(.invalidState, "snapshot \(manifest.id) runs kernel \(manifest.kernel), but the installed guest kernel is \(kernel)")
        }
    }

    /// Restores a snapshot as one new machine. `lazily`, its RAM is not written out first: a
    /// `stasis-memfs` process serves it, decompressing each frame when the guest first touches it.
    public func restore(_ reference: String, name: String?, ports: [PortForward]? = nil, autoRemove: Bool = false,
                        lazily: Bool = false) async throws -> Machine {
        let manifest = try snapshots.find(reference)
        try snapshots.verify(manifest, framesPresent: lazily)
        try await checkCompatible(manifest)
        var input = input(manifest, ports: ports, sharedMemory: nil)
        if lazily {
            _ = try snapshots.chunkedMemory(manifest)  // refuses a snapshot whose RAM is not in frames
            input.memory = .served { [snapshots] mountpoint, log in
                try await MemoryServer.start(home: snapshots.home, snapshot: manifest.id, mountpoint: mountpoint, log: log)
            }
        }
        return try await Machine.restore(input, name: name, autoRemove: autoRemove, store: machines)
    }

    /// Restores a snapshot as `count` independent machines at once; their RAM is shared
    /// copy-on-write, each has its own disk overlay, network stack and hostname, and no port
    /// forwards. If one fails, the others are removed.
    public func fork(_ reference: String, count: Int, namePrefix: String?) async throws -> [Machine] {
        let manifest = try snapshots.find(reference)
        try snapshots.verify(manifest)
        try await checkCompatible(manifest)
        // Until every fork's record names the RAM cache, gc must not take it for unused.
        let references = try await runBlocking { [snapshots] in try FileLock.acquire(snapshots.chunkWritersLock, shared: true) }
        defer { withExtendedLifetime(references) {} }
        let shared = try await runBlocking { [snapshots] in try snapshots.sharedMemoryFile(manifest) }
        let input = self.input(manifest, ports: [], sharedMemory: shared)
        let prefix = namePrefix ?? "\(manifest.machineName)-fork"
        let batch = String(format: "%04x", UInt16.random(in: 0 ... .max))
        let results = await withTaskGroup(of: Result<Machine, any Error>.self) { group in
            for i in 1 ... count {
                group.addTask {
                    do {
                        return .success(try await Machine.restore(input, name: "\(prefix)-\(batch)-\(i)", store: machines))
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var all: [Result<Machine, any Error>] = []
            for await result in group { all.append(result) }
            return all
        }
        let started = results.compactMap { try? $0.get() }
        for case .failure(let error) in results {
            for machine in started { try? await machine.remove(force: true) }
            throw error
        }
        return started
    }

    /// What `Machine.restore` needs; with `sharedMemory`, the RAM file every fork maps privately.
    private func input(_ manifest: SnapshotManifest, ports: [PortForward]?, sharedMemory: URL?) -> Machine.RestoreInput {
        var spec = manifest.spec
        if let ports { spec.ports = ports }
        let dir = snapshots.directory(manifest.id)
        let memory: Machine.RestoredMemory
        if let sharedMemory {
            memory = .mappedPrivately(sharedMemory)
        } else if manifest.memoryFrames != nil {
            memory = .written { [snapshots] ramFile in
                try await runBlocking { try snapshots.materializeMemory(manifest, to: ramFile) }
            }
        } else if let file = manifest.memory {
            memory = .copied(from: dir.appendingPathComponent(file.file))
        } else {
            memory = .inState
        }
        let state: Machine.RestoredState = if manifest.stateBase == nil {
            .file(dir.appendingPathComponent(manifest.state.file))
        } else {
            .written { [snapshots] stateFile in try await runBlocking { try snapshots.restoreDeviceState(manifest, to: stateFile) } }
        }
        return Machine.RestoreInput(
            snapshotID: manifest.id, spec: spec, state: state,
            memory: memory,
            disk: dir.appendingPathComponent(manifest.disk.file), generation: manifest.generation,
            accelerator: manifest.engine.accelerator, kernel: manifest.kernel)
    }
}
