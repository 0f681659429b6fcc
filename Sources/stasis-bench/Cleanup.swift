import Foundation
import Machines
import StasisCore
import Synchronization

/// Everything a benchmark has started, so that it can all be stopped on the way out: on success,
/// on error and on Ctrl-C alike. Machines are found by the benchmark's name prefix, so one whose
/// `stasis run` was interrupted halfway (record written, QEMU starting) is found too.
final class Cleanup: Sendable {
    static let shared = Cleanup()

    private struct State {
        var children: Set<Int32> = []
        var folders: Set<URL> = []
        var home: StasisHome?
        var machinePrefix: String?
        var stopping = false
    }

    private let state = Mutex(State())
    /// Held for a whole cleanup: the signal handler and the main flow may both start one, and the
    /// handler exits the process when its own is done, so the other must not be halfway through.
    private let exclusive = NSLock()

    /// Machines whose name starts with `prefix` in `home` are ours.
    func claimMachines(home: StasisHome, prefix: String) {
        state.withLock { $0.home = home; $0.machinePrefix = prefix }
    }

    /// Registers a child process; false once cleanup has begun (then do not start anything).
    func adopt(child pid: Int32) -> Bool {
        state.withLock { s in
            s.children.insert(pid)
            return !s.stopping
        }
    }

    func release(child pid: Int32) { _ = state.withLock { $0.children.remove(pid) } }
    func adopt(folder: URL) { _ = state.withLock { $0.folders.insert(folder) } }
    func release(folder: URL) { _ = state.withLock { $0.folders.remove(folder) } }
    var isStopping: Bool { state.withLock { $0.stopping } }

    /// Kills every child, every QEMU of our machines, deletes their records and our folders.
    /// Synchronous, so a signal handler can run it and exit; safe to run more than once.
    func run() {
        exclusive.lock()
        defer { exclusive.unlock() }
        let snapshot = state.withLock { s -> State in
            s.stopping = true
            return s
        }
        for pid in snapshot.children { kill(pid, SIGKILL) }
        // A killed `stasis run` may have left a QEMU that is still daemonizing: look twice.
        if let home = snapshot.home, let prefix = snapshot.machinePrefix {
            let store = MachineStore(home: home)
            for pass in 0 ..< 2 {
                let ours = Self.machines(in: home, prefix: prefix, store: store)
                if ours.isEmpty { break }
                if pass > 0 { usleep(200_000) }
                for record in ours {
                    for pid in Self.qemuProcesses(machineID: record.id) { kill(pid, SIGKILL) }
                }
            }
            usleep(100_000)
            for record in Self.machines(in: home, prefix: prefix, store: store) {
                for pid in Self.qemuProcesses(machineID: record.id) { kill(pid, SIGKILL) }
                do { try store.delete(id: record.id) } catch {
                    FileHandle.standardError.write(Data("stasis-bench: could not remove machine \(record.name): \(error)\n".utf8))
                }
            }
        }
        for folder in snapshot.folders { try? FileManager.default.removeItem(at: folder) }
        state.withLock { $0.folders.subtract(snapshot.folders) }
    }

    private static func machines(in home: StasisHome, prefix: String, store: MachineStore) -> [MachineRecord] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: home.machines.path)) ?? []
        return ids.filter { !$0.hasPrefix(".") }.compactMap { try? store.load(id: $0) }.filter { $0.name.hasPrefix(prefix) }
    }

    /// Processes whose command line names machine `id` (QEMU's `-name stasis-ID`): the pid in the
    /// record may not be written yet when we are interrupted.
    static func qemuProcesses(machineID id: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: data, as: UTF8.self).contains("stasis-\(id)")
        }
    }
}

/// Ctrl-C, SIGTERM and SIGHUP: clean up, then exit with 128 + the signal.
func installSignalCleanup() -> [any DispatchSourceSignal] {
    [SIGINT, SIGTERM, SIGHUP].map { sig in
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler {
            progress("interrupted: removing the machines this benchmark started")
            Cleanup.shared.run()
            exit(128 + sig)
        }
        source.resume()
        return source
    }
}

/// A child process that is waited for without blocking a thread, and killed on cleanup.
final class Child: Sendable {
    private let process: Process
    private let status = Mutex<(Int32?, CheckedContinuation<Int32, Never>?)>((nil, nil))

    /// Output and error go to the given files (or nowhere); input is /dev/null.
    init(_ executable: URL, _ arguments: [String], output: URL? = nil, error: URL? = nil) throws {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try output.map(Self.writing) ?? FileHandle.nullDevice
        process.standardError = try error.map(Self.writing) ?? FileHandle.nullDevice
        self.process = process
        process.terminationHandler = { [weak self] p in
            Cleanup.shared.release(child: p.processIdentifier)
            self?.finished(p.terminationStatus)
        }
    }

    private func finished(_ code: Int32) {
        let waiter = status.withLock { s -> CheckedContinuation<Int32, Never>? in
            s.0 = code
            defer { s.1 = nil }
            return s.1
        }
        waiter?.resume(returning: code)
    }

    private static func writing(_ url: URL) throws -> FileHandle {
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        return try FileHandle(forWritingTo: url)
    }

    var pid: Int32 { process.processIdentifier }

    func start() throws {
        guard !Cleanup.shared.isStopping else { throw CancellationError() }
        try process.run()
        if !Cleanup.shared.adopt(child: process.processIdentifier) { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    /// The exit status (the signal number if it was killed).
    func wait() async -> Int32 {
        await withCheckedContinuation { c in
            let done = status.withLock { s -> Int32? in
                if let code = s.0 { return code }
                s.1 = c
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }

    /// The exit status if the process has ended.
    var exitStatus: Int32? { status.withLock { $0.0 } }

    func kill() { Foundation.kill(process.processIdentifier, SIGKILL) }
}

func progress(_ message: String) {
    FileHandle.standardError.write(Data("\(message)\n".utf8))
}
