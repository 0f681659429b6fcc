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
        /// Snapshots made from our machines (their manifest's machine name has our prefix) are ours.
        var snapshotsToo = false
        /// Processes started detached (plain QEMU with -daemonize), found by a word of their
        /// command line because their pid may not be known yet when we are interrupted.
        var markers: Set<String> = []
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

    /// Snapshots taken of our machines are ours too: removed on cleanup, with any staging folder
    /// this process is still building.
    func claimSnapshots() { state.withLock { $0.snapshotsToo = true } }

    /// Leaves the snapshots of our machines in place on cleanup (a home kept for inspection).
    func releaseSnapshots() { state.withLock { $0.snapshotsToo = false } }

    /// A detached process whose command line contains `marker` (e.g. QEMU's `-name stasis-ID`) is
    /// ours; false once cleanup has begun (then do not start it).
    func adopt(marker: String) -> Bool {
        state.withLock { s in
            s.markers.insert(marker)
            return !s.stopping
        }
    }

    func release(marker: String) { _ = state.withLock { $0.markers.remove(marker) } }

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
        for marker in snapshot.markers {
            for pid in Self.processes(containing: marker) { kill(pid, SIGKILL) }
        }
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
        if snapshot.snapshotsToo, let home = snapshot.home, let prefix = snapshot.machinePrefix {
            Self.removeSnapshots(in: home, prefix: prefix)
        }
        for folder in snapshot.folders { try? FileManager.default.removeItem(at: folder) }
        state.withLock { $0.folders.subtract(snapshot.folders) }
    }

    /// Deletes the snapshots of machines named `prefix…`, and the staging folders whose lock this
    /// process holds (a snapshot interrupted halfway). Machines are deleted before this runs, so
    /// nothing uses them any more.
    private static func removeSnapshots(in home: StasisHome, prefix: String) {
        let fm = FileManager.default
        let names = (try? fm.contentsOfDirectory(atPath: home.snapshots.path)) ?? []
        let ourLocks = flockedInodes(pid: getpid())
        for name in names {
            let dir = home.snapshots.appendingPathComponent(name)
            var ours = false
            if name.hasPrefix(".staging-") || name.hasPrefix(".new-") {
                var st = stat()
                ours = stat(dir.appendingPathComponent(".lock").path, &st) == 0 && ourLocks.contains(UInt64(st.st_ino))
            } else if !name.hasPrefix("."),
                      let data = fm.contents(atPath: dir.appendingPathComponent("manifest.json").path),
                      let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                      let machine = object["machineName"] as? String {
                ours = machine.hasPrefix(prefix)
            }
            guard ours else { continue }
            // Out of sight first, as `stasis snapshot rm` does, so no half snapshot is ever listed.
            let trash = home.tmp.appendingPathComponent("rm-snapshot-\(name)-\(UInt32.random(in: 0 ... .max))")
            try? fm.createDirectory(at: home.tmp, withIntermediateDirectories: true)
            if rename(dir.path, trash.path) == 0 {
                try? fm.removeItem(at: trash)
            } else {
                try? fm.removeItem(at: dir)
            }
        }
    }

    /// Inodes of the files `pid` holds a flock on, from /proc/locks.
    private static func flockedInodes(pid: Int32) -> Set<UInt64> {
        guard let handle = FileHandle(forReadingAtPath: "/proc/locks"), let data = try? handle.readToEnd() else { return [] }
        try? handle.close()
        var inodes: Set<UInt64> = []
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[1] == "FLOCK", Int32(fields[4]) == pid,
                  let inode = fields[5].split(separator: ":").last.flatMap({ UInt64($0) }) else { continue }
            inodes.insert(inode)
        }
        return inodes
    }

    private static func machines(in home: StasisHome, prefix: String, store: MachineStore) -> [MachineRecord] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: home.machines.path)) ?? []
        return ids.filter { !$0.hasPrefix(".") }.compactMap { try? store.load(id: $0) }.filter { $0.name.hasPrefix(prefix) }
    }

    /// Processes whose command line names machine `id` (QEMU's `-name stasis-ID`): the pid in the
    /// record may not be written yet when we are interrupted.
    static func qemuProcesses(machineID id: String) -> [Int32] {
        processes(containing: "stasis-\(id)")
    }

    /// Processes (other than this one) whose command line contains `marker`.
    static func processes(containing marker: String) -> [Int32] {
        let me = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard pid != me, let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: data, as: UTF8.self).contains(marker)
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
