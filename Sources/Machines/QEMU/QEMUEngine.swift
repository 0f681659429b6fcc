import Foundation
import StasisCore

/// Runs machines as QEMU microvm processes (Debian's qemu-system-x86).
public struct QEMUEngine: MachineEngine {
    public let name = "qemu"
    /// The qemu-system binary.
    public var qemuBinary: String
    /// Where versions already asked for are remembered across processes (nil: in this one only).
    public var versionFile: URL?

    public init(qemuBinary: String = "qemu-system-x86_64", versionFile: URL? = nil) {
        self.qemuBinary = qemuBinary
        self.versionFile = versionFile
    }

    public func checkInstalled(for spec: MachineSpec) throws {
        var needed = [(qemuBinary, "qemu-system-x86"), ("qemu-img", "qemu-utils"), ("zstd", "zstd")]
        if !spec.allowedHosts.isEmpty { needed.append(("socat", "socat")) }
        for (program, package) in needed where HostTool.which(program) == nil && !(program.contains("/") && access(program, X_OK) == 0) {
            throw StasisError(.missingDependency, "\(program) is not installed: run scripts/setup.sh (or apt-get install \(package))")
        }
    }

    public func start(_ record: MachineRecord, paths: MachinePaths, boot: BootArtifacts, accelerator: AcceleratorChoice) async throws -> Int32 {
        try paths.checkSocketPathLength()
        try checkInstalled(for: record.spec)
        let disk = paths.disk(of: record)
        if !FileManager.default.fileExists(atPath: disk.path) {
            try await QCOW2Overlay.create(disk, over: boot.imageDisk, format: "raw")
        }
        return try await launch(QEMUCommandLine(record: record, paths: paths, boot: boot, accelerator: accelerator,
                                                tscKHz: AcceleratorChoice.hostTSCkHz()), paths: paths)
    }

    /// Starts QEMU detached (-daemonize) and returns its pid once it has opened its sockets.
    func launch(_ commandLine: QEMUCommandLine, paths: MachinePaths) async throws -> Int32 {
        for i in 0 ..< 4 { unlink(paths.agentSocket(i).path) }
        unlink(paths.qmpSocket.path)
        unlink(paths.pidFile.path)
        try AtomicFile.write(Data((([qemuBinary] + commandLine.arguments).joined(separator: " ") + "\n").utf8),
                             to: paths.directory.appendingPathComponent("cmdline"))
        // -daemonize: the command returns once QEMU has opened its sockets, and QEMU lives on
        // detached from us.
        do {
            try await HostTool.run(qemuBinary, commandLine.arguments)
        } catch let error as StasisError where error.code == .toolFailed {
            throw StasisError(.toolFailed, "QEMU did not start: \(error.message)")
        }
        guard let text = try? String(contentsOf: paths.pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw StasisError(.toolFailed, "QEMU started but wrote no pid file at \(paths.pidFile.path)")
        }
        return pid
    }

    public func kill(pid: Int32, paths: MachinePaths) async {
        Foundation.kill(pid, SIGKILL)
    }

    public func isAlive(pid: Int32, machineID: String) -> Bool {
        guard pid > 0, Foundation.kill(pid, 0) == 0 || errno == EPERM else { return false }
        // A reused pid is not our machine: check QEMU's -name.
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")"),
           stat[stat.index(close, offsetBy: 2)] == "Z" {
            return false
        }
        return String(decoding: cmdline, as: UTF8.self).contains("stasis-\(machineID)")
    }
}
