import Foundation
import Guest
import StasisCore

/// The run folder of one machine: `$STASIS_HOME/machines/<id>/`.
public struct MachinePaths: Sendable {
    public let directory: URL

    public init(home: StasisHome, id: String) {
        directory = home.machines.appendingPathComponent(id)
    }

    public var record: URL { directory.appendingPathComponent("machine.json") }
    public var console: URL { directory.appendingPathComponent("console.log") }
    public var qmpSocket: URL { directory.appendingPathComponent("qmp.sock") }
    public var pidFile: URL { directory.appendingPathComponent("qemu.pid") }
    public var memory: URL { directory.appendingPathComponent("memory") }
    public var disk: URL { directory.appendingPathComponent("disk.qcow2") }
    /// The overlay the machine writes now.
    public func disk(of record: MachineRecord) -> URL { record.diskFile.map { directory.appendingPathComponent($0) } ?? disk }
    /// The guest RAM file the machine maps.
    public func memory(of record: MachineRecord) -> URL { record.memoryFile.map { URL(fileURLWithPath: $0) } ?? memory }
    public var lock: URL { directory.appendingPathComponent("lock") }
    /// The device state a restore puts back together from a delta, for QEMU to load once.
    public var restoredState: URL { directory.appendingPathComponent("state.restored") }
    /// Where a lazily restored machine's RAM is served (a FUSE mount while its QEMU runs).
    public var memoryMount: URL { directory.appendingPathComponent("memory.fuse") }
    /// The log of the process serving `memoryMount`.
    public var memoryServerLog: URL { directory.appendingPathComponent("memfs.log") }
    /// Host end of the guest agent's port `index`.
    public func agentSocket(_ index: Int) -> URL { directory.appendingPathComponent("agent\(index).sock") }
    /// Held (flock) by the process using agent port `index`, so two clients never share one.
    public func agentLock(_ index: Int) -> URL { directory.appendingPathComponent("agent\(index).lock") }

    /// Unix socket paths are limited to 107 bytes; say so before QEMU does, less clearly.
    public func checkSocketPathLength() throws {
        let longest = agentSocket(AgentProtocol.portNames.count - 1).path
        guard longest.utf8.count < 104 else {
            throw StasisError(.invalidArgument, "STASIS_HOME is too deep for unix sockets (\(longest)): use a shorter STASIS_HOME")
        }
    }
}
