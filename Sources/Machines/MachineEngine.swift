import Foundation
import StasisCore

/// What a machine boots: kernel, initramfs (with the guest agent) and the image's disk.
public struct BootArtifacts: Sendable {
    public var kernel: URL
    public var initramfs: URL
    public var kernelVersion: String
    public var imageDisk: URL

    public init(kernel: URL, initramfs: URL, kernelVersion: String, imageDisk: URL) {
        self.kernel = kernel
        self.initramfs = initramfs
        self.kernelVersion = kernelVersion
        self.imageDisk = imageDisk
    }
}

/// The seam to a virtual machine monitor. One backend per set of files (QEMU today); the
/// `Machine` actor drives it and never talks to the monitor's own protocol.
public protocol MachineEngine: Sendable {
    /// Short name recorded with each machine ("qemu").
    var name: String { get }
    /// Throws a clear error if a program the engine needs for `spec` is missing.
    func checkInstalled(for spec: MachineSpec) throws
    /// Prepares the run folder (disk overlay, …) and starts the monitor process detached from
    /// the caller, so the machine outlives it. Returns the process id.
    func start(_ record: MachineRecord, paths: MachinePaths, boot: BootArtifacts, accelerator: AcceleratorChoice) async throws -> Int32
    /// Ends the monitor process at once (the guest gets no chance to sync).
    func kill(pid: Int32, paths: MachinePaths) async
    /// Whether `pid` is still this machine's monitor process.
    func isAlive(pid: Int32, machineID: String) -> Bool
}

extension MachineEngine {
    /// Waits until the process is gone; false if it is still there after `timeout`.
    public func waitForExit(pid: Int32, machineID: String, timeout: Duration) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if !isAlive(pid: pid, machineID: machineID) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return !isAlive(pid: pid, machineID: machineID)
    }
}

/// What a paused machine's snapshot captured, as the engine reports it.
public struct SavedState: Sendable {
    /// How long the guest was paused.
    public var paused: Duration
    /// Whether guest RAM is in the state file (false: it stays in the memory file).
    public var ramInState: Bool
    /// The disk overlay the guest was writing when paused, as the engine itself reports it (a
    /// record can be stale after a crash); frozen from then on.
    public var frozenDisk: URL
}

/// Where a restore takes its state from.
public struct RestoreSource: Sendable {
    /// The device state (and, if `ramInState`, the RAM) as the engine saved it.
    public var state: URL
    public var ramInState: Bool

    public init(state: URL, ramInState: Bool) {
        self.state = state
        self.ramInState = ramInState
    }
}

/// Optional engine abilities: snapshot and restore. Engines without them throw `.unsupported`.
public protocol SnapshottingEngine: MachineEngine {
    /// The engine's version, recorded in snapshots: device state is only loadable by the same.
    func version() async throws -> String
    /// The device list, in order, that `record` would get; restore compares it with the snapshot's.
    func deviceLayout(_ record: MachineRecord, accelerator: AcceleratorChoice) -> [String]
    /// Pauses the guest and writes its device state to `state`, then calls `whilePaused` with what
    /// was saved. Without `newDisk` it then ends the process (the caller commits the snapshot in
    /// `whilePaused`); with it, it moves the guest onto that new disk overlay first (so the caller
    /// can copy RAM in `whilePaused`) and resumes it.
    func saveState(pid: Int32, record: MachineRecord, paths: MachinePaths, to state: URL,
                   leaveRunningOn newDisk: URL?, whilePaused: @Sendable (SavedState) async throws -> Void) async throws -> SavedState
    /// Starts a process that loads `source` instead of booting, and resumes it.
    func restore(_ record: MachineRecord, paths: MachinePaths, from source: RestoreSource,
                 accelerator: AcceleratorChoice) async throws -> Int32
}
