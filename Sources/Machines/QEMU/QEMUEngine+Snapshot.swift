import Foundation
import StasisCore
import Synchronization

extension QEMUEngine: SnapshottingEngine {
    /// The first line of `qemu-system-x86_64 --version`. Every snapshot and restore asks, and
    /// spawning QEMU costs 20-30 ms, so the answer is remembered per binary file (its path and
    /// `FileIdentity`, which an upgrade changes): in this process, and in `versionFile` for the
    /// next CLI command.
    public func version() async throws -> String {
        let path = qemuBinary.contains("/") ? qemuBinary : HostTool.which(qemuBinary) ?? qemuBinary
        guard let identity = FileIdentity.of(path).map({ "\(path) \($0)" }) else { return try await askVersion() }
        if let known = QEMUVersionCache.shared.withLock({ $0[identity] }) { return known }
        if let versionFile, let saved = try? AtomicFile.readJSON([String: String].self, from: versionFile), let known = saved[identity] {
            QEMUVersionCache.shared.withLock { $0[identity] = known }
            return known
        }
        let version = try await askVersion()
        QEMUVersionCache.shared.withLock { $0[identity] = version }
        // Only a cache: a failed write costs the next command one more question.
        if let versionFile { try? AtomicFile.writeJSON([identity: version], to: versionFile) }
        return version
    }

    private func askVersion() async throws -> String {
        let out = try await HostTool.run(qemuBinary, ["--version"]).standardOutput
        return out.split(separator: "\n").first.map(String.init) ?? "unknown"
    }

    public func deviceLayout(_ record: MachineRecord, accelerator: AcceleratorChoice) -> [String] {
        QEMUCommandLine(record: record, paths: MachinePaths(home: StasisHome(root: URL(fileURLWithPath: "/")), id: record.id),
                        boot: BootArtifacts(kernel: URL(fileURLWithPath: "/"), initramfs: URL(fileURLWithPath: "/"),
                                            kernelVersion: "", imageDisk: URL(fileURLWithPath: "/")),
                        accelerator: accelerator, tscKHz: nil).deviceLayout
    }

    /// The proven sequence (DESIGN.md): with RAM in a shared file, `x-ignore-shared` leaves it out
    /// of the stream, so only device state (tens of KB) is written while the guest is paused.
    public func saveState(pid: Int32, record: MachineRecord, paths: MachinePaths, to state: URL,
                          leaveRunningOn newDisk: URL?, whilePaused: @Sendable (SavedState) async throws -> Void) async throws -> SavedState {
        let ramInFile = record.memoryShared != false
        let clock = ContinuousClock()
        return try await QMPClient.connect(socketPath: paths.qmpSocket.path) { qmp in
            try await qmp.execute("migrate-set-capabilities", ["capabilities": [["capability": "x-ignore-shared", "state": ramInFile] as [String: any Sendable]] as [any Sendable]])
            let active = try await Self.activeDisk(qmp)
            let frozenDisk = active?.file ?? paths.disk(of: record)
            if let newDisk, let size = active?.virtualSize {
                // Made before the pause, with stasis's cluster size (QEMU would use 64 KiB); its
                // backing is the overlay the guest writes now, open in QEMU, so the size is QEMU's.
                try await QCOW2Overlay.create(newDisk, backing: frozenDisk.path, format: "qcow2", virtualSize: size)
            }
            let pausedAt = clock.now
            try await qmp.execute("stop")
            do {
                // Written as it comes: device state alone is tens of KB, which the snapshot
                // store compresses (as a delta) after the pause; a stream that carries RAM (a
                // fork's private memory) is too big to hold up the pause compressing it.
                try await qmp.execute("migrate", ["uri": "exec:cat > \(shellQuoted(state.path))"])
                try await Self.waitForMigration(qmp)
                if let newDisk {
                    let made = FileManager.default.fileExists(atPath: newDisk.path)
                    try await qmp.execute("blockdev-snapshot-sync", ["device": "d0", "snapshot-file": newDisk.path, "format": "qcow2",
                                                                     "mode": made ? "existing" : "absolute-paths"])
                    try await whilePaused(SavedState(paused: clock.now - pausedAt, ramInState: !ramInFile, frozenDisk: frozenDisk))
                    try await qmp.execute("cont")
                    return SavedState(paused: clock.now - pausedAt, ramInState: !ramInFile, frozenDisk: frozenDisk)
                }
                // The state is saved: the guest stays paused for good. The caller commits the
                // snapshot now and QEMU quits only after that, so a crash in between leaves a live
                // machine or a whole snapshot, never neither.
                let saved = SavedState(paused: clock.now - pausedAt, ramInState: !ramInFile, frozenDisk: frozenDisk)
                try await whilePaused(saved)
                try await qmp.execute("quit")
                return saved
            } catch {
                // Never leave a guest paused because a snapshot failed.
                _ = try? await qmp.execute("cont")
                throw error
            }
        }
    }

    /// Whether `file` starts with the zstd frame magic (device state saved compressed; older
    /// snapshots and streams with RAM hold QEMU's own format, which starts "QEVM").
    static func isZstd(_ file: URL) -> Bool {
        guard let handle = try? FileHandle(forReadingFrom: file) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: 4)) == Data([0x28, 0xb5, 0x2f, 0xfd])
    }

    /// The file the guest's disk writes go to now (the top of its layer chain), and the disk's size.
    private static func activeDisk(_ qmp: QMPClient) async throws -> (file: URL, virtualSize: Int?)? {
        let devices = try await qmp.execute("query-block") as? [any Sendable] ?? []
        for case let device as [String: any Sendable] in devices where device["device"] as? String == "d0" {
            if let inserted = device["inserted"] as? [String: any Sendable], let file = inserted["file"] as? String {
                let image = inserted["image"] as? [String: any Sendable]
                let size = (image?["virtual-size"] as? Int) ?? (image?["virtual-size"] as? Int64).map(Int.init)
                    ?? (image?["virtual-size"] as? Double).map { Int($0) }
                return (URL(fileURLWithPath: file), size)
            }
        }
        return nil
    }

    private static func waitForMigration(_ qmp: QMPClient) async throws {
        let deadline = ContinuousClock.now + .seconds(120)
        while true {
            guard ContinuousClock.now < deadline else {
                _ = try? await qmp.execute("migrate_cancel")
                throw StasisError(.timeout, "QEMU did not finish saving the machine state in 120 s")
            }
            let status = try await qmp.execute("query-migrate") as? [String: any Sendable]
            switch status?["status"] as? String {
            case "completed": return
            case "failed", "cancelled":
                throw StasisError(.toolFailed, "QEMU could not save the machine state: \(status?["error-desc"] as? String ?? "migration failed")")
            default: try await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    public func restore(_ record: MachineRecord, paths: MachinePaths, from source: RestoreSource,
                        accelerator: AcceleratorChoice) async throws -> Int32 {
        try paths.checkSocketPathLength()
        try checkInstalled(for: record.spec)
        let commandLine = QEMUCommandLine(record: record, paths: paths,
                                          boot: BootArtifacts(kernel: URL(fileURLWithPath: "/"), initramfs: URL(fileURLWithPath: "/"),
                                                              kernelVersion: "", imageDisk: URL(fileURLWithPath: "/")),
                                          accelerator: accelerator, tscKHz: nil, incoming: true)
        let pid = try await launch(commandLine, paths: paths)
        do {
            try await QMPClient.connect(socketPath: paths.qmpSocket.path) { qmp in
                try await qmp.execute("migrate-set-capabilities", ["capabilities": [["capability": "x-ignore-shared", "state": !source.ramInState] as [String: any Sendable]] as [any Sendable]])
                let reader = Self.isZstd(source.state) ? "zstd -dcq" : "cat"
                try await qmp.execute("migrate-incoming", ["uri": "exec:\(reader) \(shellQuoted(source.state.path))"])
                let deadline = ContinuousClock.now + .seconds(120)
                while true {
                    guard ContinuousClock.now < deadline else {
                        throw StasisError(.timeout, "QEMU did not finish loading the machine state in 120 s")
                    }
                    let status = try await qmp.execute("query-status") as? [String: any Sendable]
                    switch status?["status"] as? String {
                    case "inmigrate": try await Task.sleep(for: .milliseconds(1))
                    case "paused", "postmigrate", "prelaunch":
                        try await qmp.execute("cont")
                        return
                    case "running": return
                    case let other:
                        throw StasisError(.toolFailed, "QEMU could not load the machine state (status \(other ?? "unknown"))")
                    }
                }
            }
        } catch {
            Foundation.kill(pid, SIGKILL)
            throw error
        }
        return pid
    }
}

/// `text` as one word for /bin/sh (QEMU runs `exec:` migration URIs through it).
func shellQuoted(_ text: String) -> String {
    "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// QEMU versions already asked for, by binary file identity (see `QEMUEngine.version`).
enum QEMUVersionCache {
    static let shared = Mutex<[String: String]>([:])
}
