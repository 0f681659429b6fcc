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
