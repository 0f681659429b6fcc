import Foundation
import StasisCore

/// Starts and finds `stasis-memfs`, the process that serves one lazily restored machine's RAM.
/// It runs detached (a process group of its own) for as long as the machine's QEMU keeps the file
/// open, so a `stasis restore` can return while the guest goes on faulting its memory in.
public enum MemoryServer {
    /// The executable: `$STASIS_MEMFS`, else `stasis-memfs` beside the running program (the CLI,
    /// the bench or the tests), else on `PATH`.
    public static func binary() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["STASIS_MEMFS"], !path.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw StasisError(.notFound, "STASIS_MEMFS is \(path), which is not an executable file: point it at stasis-memfs or unset it")
            }
            return URL(fileURLWithPath: path)
        }
        let own = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("stasis-memfs")
        if FileManager.default.isExecutableFile(atPath: own.path) { return own }
        if let found = HostTool.which("stasis-memfs") { return URL(fileURLWithPath: found) }
        throw StasisError(.notFound, "stasis-memfs, which serves a lazily restored machine's memory, is not installed beside \(own.deletingLastPathComponent().path) or on PATH: build it (swift build --product stasis-memfs) or restore without --lazy")
    }

    /// Whether this host can serve memory lazily: /dev/fuse can be opened and stasis-memfs is found.
    public static var isAvailable: Bool {
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        close(fd)
        return (try? binary()) != nil
    }

    /// How long a server may take to mount before the restore gives up on it.
    public static let startTimeout: Duration = .seconds(30)

    /// Starts a server for `snapshot`'s RAM at `mountpoint` (made if missing) and returns the
    /// served file once it can be opened. Its log goes to `log`.
    public static func start(home: StasisHome, snapshot: String, mountpoint: URL, log: URL) async throws -> URL {
        let executable = try binary()
        try FileManager.default.createDirectory(at: mountpoint, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let process = Process()
        process.executableURL = executable
        process.arguments = ["--home", home.root.path, "--snapshot", snapshot, "--mount", mountpoint.path]
        let ready = Pipe()
        process.standardOutput = ready
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardInput = FileHandle.nullDevice
        // Foundation starts it in a process group of its own: Ctrl-C of the restore, or the end of
        // its terminal, does not reach it, and it lives on after the restore returns.
        try process.run()
        // A server stuck before mounting is stopped, which ends the read below.
        let deadline = Task {
            try await Task.sleep(for: startTimeout)
            process.terminate()
        }
        defer { deadline.cancel() }
        // It writes "ready" once mounted, then closes its end; end of file without it is a failure.
        let answer = try await runBlocking { try ready.fileHandleForReading.readToEnd() ?? Data() }
        if String(decoding: answer, as: UTF8.self).hasPrefix("ready") {
            return mountpoint.appendingPathComponent(MemoryFileSystem.fileName)
        }
        _ = try? await runBlocking { process.waitUntilExit() }
        let reason = (try? String(contentsOf: log, encoding: .utf8))?
            .split(separator: "\n").last.map(String.init) ?? "it exited with status \(process.terminationStatus)"
        throw StasisError(.ioFailure, "cannot serve the memory of snapshot \(snapshot) lazily: \(reason)")
    }
}
