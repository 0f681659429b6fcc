import Foundation
import Guest
import Logging
import StasisCore

/// One machine: its record, its run folder and the engine that runs it. Every state change goes
/// through `move(to:)`, which checks the transition and persists it before anything else happens.
public actor Machine {
    public private(set) var record: MachineRecord
    /// The machine's id, which never changes.
    public nonisolated let id: String
    public nonisolated let paths: MachinePaths
    public nonisolated let store: MachineStore
    private var engine: any MachineEngine { store.engine }

    public init(record: MachineRecord, store: MachineStore) {
        self.record = record
        self.store = store
        self.id = record.id
        self.paths = MachinePaths(home: store.home, id: record.id)
    }

    /// Opens an existing machine by name or id.
    public static func open(_ reference: String, store: MachineStore) throws -> Machine {
        Machine(record: try store.find(reference), store: store)
    }

    public var name: String { record.name }
    public var state: MachineState { record.state }

    func move(to next: MachineState, _ update: (inout MachineRecord) -> Void = { _ in }) throws {
        // Another process may change the record too: check and write it under the machine's lock.
        record = try store.update(id: record.id) { current in
            guard current.state == next || current.state.canMove(to: next) else {
                throw StasisError(.invalidState, "machine \(current.name) is \(current.state.rawValue) and cannot become \(next.rawValue)")
            }
            current.state = next
            update(&current)
        }
    }

    /// Re-reads the record and checks the process is alive.
    public func refresh() throws -> MachineRecord {
        record = try store.reconcile(try store.load(id: record.id))
        return record
    }

    /// Starts the machine and waits until its guest agent answers.
    public func boot(_ boot: BootArtifacts, timeout: Duration = .seconds(90)) async throws -> GuestInfo {
        let accel = AcceleratorChoice.choose(record.spec.accelerator)
        try move(to: .starting) {
            $0.started = Date()
            $0.pid = nil
            $0.failure = nil
            $0.accelerator = accel.kind.rawValue
            $0.acceleratorReason = accel.reason
            $0.kernel = boot.kernelVersion
            $0.diskBase = boot.imageDisk.path
            $0.diskBaseFormat = "raw"
        }
        let pid: Int32
        do {
            pid = try await engine.start(record, paths: paths, boot: boot, accelerator: accel)
        } catch {
            try? move(to: .failed) { $0.failure = "\(error)" }
            throw error
        }
        try move(to: .starting) { $0.pid = pid }
        do {
            let info = try await withAgent(timeout: timeout) { agent in
                try await agent.syncClock()
                return await agent.guestInfo
            }
            try move(to: .running)
            return info ?? GuestInfo(agentVersion: 0, kernelRelease: "", hostname: record.name, uptimeNanoseconds: 0, generation: 0)
        } catch {
            try await failStart(pid: pid, error)
        }
    }

    /// A start that did not reach an answering guest: kill what is left, record why, rethrow.
    func failStart(pid: Int32, _ error: any Error) async throws -> Never {
        await engine.kill(pid: pid, paths: paths)
        _ = await engine.waitForExit(pid: pid, machineID: record.id, timeout: .seconds(5))
        let tail = store.consoleTail(record.id)
        try? move(to: .failed) { $0.pid = nil; $0.failure = "\(error)\nConsole log tail:\n\(tail)" }
        throw StasisError(.guestFailure, "machine \(record.name) did not come up: \(error)\nConsole log tail:\n\(tail)")
    }

    /// Connects to the guest agent on a port no other client holds and runs `body`.
    public func withAgent<R: Sendable>(timeout: Duration = .seconds(30), _ body: @Sendable (AgentClient) async throws -> R) async throws -> R {
        let current = try refresh()
        guard [.running, .starting, .stopping].contains(current.state), let pid = current.pid else {
            throw StasisError(.invalidState, "machine \(current.name) is \(current.state.rawValue), not running: start a new one with `stasis run`")
        }
        var held: (FileLock, Int)?
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while held == nil {
            for i in AgentProtocol.portNames.indices {
                if let lock = try FileLock.tryAcquire(paths.agentLock(i)) { held = (lock, i); break }
            }
            if held == nil {
                guard clock.now < deadline else {
                    throw StasisError(.timeout, "all \(AgentProtocol.portNames.count) agent connections of \(current.name) are busy")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        guard let (lock, port) = held else { throw StasisError(.internalError, "no agent port") }
        let engine = self.engine
        let id = current.id
        // The port lock is held for as long as the connection is open.
        defer { withExtendedLifetime(lock) {} }
        return try await AgentClient.connect(socketPath: paths.agentSocket(port).path, timeout: timeout,
                                             isAlive: { engine.isAlive(pid: pid, machineID: id) }, body)
    }

    /// Shuts the guest down cleanly (its disks synced); kills it if it has not gone after `timeout`.
    public func stop(timeout: Duration = .seconds(10)) async throws {
        let current = try refresh()
        guard current.state.hasProcess, let pid = current.pid else {
            if current.state == .starting { try move(to: .failed) { $0.failure = "stopped while starting" } }
            return
        }
        try move(to: .stopping)
        _ = try? await withAgent(timeout: .seconds(2)) { agent in try await agent.shutdown() }
        if !(await engine.waitForExit(pid: pid, machineID: record.id, timeout: timeout)) {
            await engine.kill(pid: pid, paths: paths)
            _ = await engine.waitForExit(pid: pid, machineID: record.id, timeout: .seconds(5))
        }
        try move(to: .stopped) { $0.pid = nil }
    }

    /// Ends the machine's process at once.
    public func kill() async throws {
        let current = try refresh()
        guard current.state.hasProcess, let pid = current.pid else { return }
        try move(to: .stopping)
        await engine.kill(pid: pid, paths: paths)
        _ = await engine.waitForExit(pid: pid, machineID: record.id, timeout: .seconds(5))
        try move(to: .stopped) { $0.pid = nil }
    }

    /// Deletes the machine. A running one is refused unless `force`, which kills it first.
    public func remove(force: Bool) async throws {
        let current = try refresh()
        if current.state.hasProcess {
            guard force else {
                throw StasisError(.invalidState, "machine \(current.name) is \(current.state.rawValue): stop it first (`stasis stop \(current.name)`) or use `stasis rm -f`")
            }
            try await kill()
        }
        try store.delete(id: current.id)
    }
}
