import Foundation
import Machines
import StasisCore
import Synchronization

/// Takes snapshots of running machines and brings them back, as one machine or many.
public struct Snapshotter: Sendable {
    public let snapshots: SnapshotStore
    public let machines: MachineStore

    public init(home: StasisHome, machines: MachineStore? = nil) {
        self.snapshots = SnapshotStore(home: home)
        self.machines = machines ?? MachineStore(home: home)
    }

    /// Snapshots a running machine. Without `leaveRunning` it is stopped afterwards.
    public func take(_ machine: Machine, tag: String?, leaveRunning: Bool) async throws -> SnapshotManifest {
        let (id, staged, lock) = try snapshots.stage()
        defer { withExtendedLifetime(lock) {} }
        let committed = Mutex<SnapshotManifest?>(nil)
        do {
            try await machine.capture(into: staged, leaveRunning: leaveRunning) { capture in
                let manifest = try manifest(id: id, tag: tag, capture: capture)
                try snapshots.commit(manifest, staged: staged)
                committed.withLock { $0 = manifest }
            }
        } catch {
            // Committed but the machine failed to stop afterwards: the snapshot is whole; keep it.
            if let manifest = committed.withLock({ $0 }) { return manifest }
            try? FileManager.default.removeItem(at: staged)
            throw error
        }
        guard let manifest = committed.withLock({ $0 }) else {
            throw StasisError(.internalError, "the snapshot of \(await machine.name) was never committed")
        }
        return manifest
    }

    private func manifest(id: String, tag: String?, capture: Machine.Capture) throws -> SnapshotManifest {
        let record = capture.record
        let parent = try record.restoredFrom.map { try snapshots.manifest($0) }
        return SnapshotManifest(
            format: SnapshotManifest.currentFormat, id: id, tag: tag, created: Date(),
            machineID: record.id, machineName: record.name, spec: record.spec,
            engine: .init(name: machines.engine.name, version: capture.engineVersion,
                          accelerator: record.accelerator ?? "tcg", deviceLayout: capture.deviceLayout),
            kernel: record.kernel ?? "unknown", image: record.spec.image, diskBase: capture.diskBase,
            parent: parent?.id, generation: record.generation ?? 0,
            pausedMilliseconds: capture.paused.milliseconds,
            state: try SnapshotStore.part(capture.state),
            memory: try capture.memory.map { try SnapshotStore.part($0) },
            disk: try SnapshotStore.part(capture.disk))
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

    /// Restores a snapshot as one new machine.
    public func restore(_ reference: String, name: String?, ports: [PortForward]? = nil) async throws -> Machine {
        let manifest = try snapshots.find(reference)
        try snapshots.verify(manifest)
        try await checkCompatible(manifest)
        return try await Machine.restore(input(manifest, ports: ports), name: name, memoryMode: .copy, store: machines)
    }

    /// Restores a snapshot as `count` independent machines at once; their RAM is shared
    /// copy-on-write, each has its own disk overlay, network stack and hostname, and no port
    /// forwards. If one fails, the others are removed.
    public func fork(_ reference: String, count: Int, namePrefix: String?) async throws -> [Machine] {
        let manifest = try snapshots.find(reference)
        try snapshots.verify(manifest)
        try await checkCompatible(manifest)
        let input = self.input(manifest, ports: [])
        let prefix = namePrefix ?? "\(manifest.machineName)-fork"
        let batch = String(format: "%04x", UInt16.random(in: 0 ... .max))
        let results = await withTaskGroup(of: Result<Machine, any Error>.self) { group in
            for i in 1 ... count {
                group.addTask {
                    do {
                        return .success(try await Machine.restore(input, name: "\(prefix)-\(batch)-\(i)", memoryMode: .shareCopyOnWrite, store: machines))
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

    private func input(_ manifest: SnapshotManifest, ports: [PortForward]?) -> Machine.RestoreInput {
        var spec = manifest.spec
        if let ports { spec.ports = ports }
        let dir = snapshots.directory(manifest.id)
        return Machine.RestoreInput(
            snapshotID: manifest.id, spec: spec, state: dir.appendingPathComponent(manifest.state.file),
            memory: manifest.memory.map { dir.appendingPathComponent($0.file) },
            disk: dir.appendingPathComponent(manifest.disk.file), generation: manifest.generation,
            accelerator: manifest.engine.accelerator, kernel: manifest.kernel)
    }
}
