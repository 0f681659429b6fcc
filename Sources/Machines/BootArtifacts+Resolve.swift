import Foundation
import Images
import StasisCore

extension BootArtifacts {
    /// The guest agent binary: `$STASIS_INIT` if set, else the one setup installed.
    public static func agentBinary(home: StasisHome, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> URL {
        let url = environment["STASIS_INIT"].map { URL(fileURLWithPath: $0) } ?? home.guestAgent
        guard FileManager.default.isReadableFile(atPath: url.path) else {
            throw StasisError(.missingDependency, "the guest agent is missing at \(url.path): run scripts/setup.sh (it builds stasis-init)")
        }
        return url
    }

    /// The version of the guest kernel setup installed, if any.
    public static func installedKernelVersion(home: StasisHome) -> String? {
        try? KernelInfo.current(home: home).version
    }

    /// Kernel, initramfs (built and cached on first use) and the image's disk.
    public static func resolve(home: StasisHome, image: String) async throws -> BootArtifacts {
        let record = try await ImageStore(home: home).image(named: image)
        let kernel = try KernelInfo.current(home: home)
        let initramfs = try InitramfsBuilder(home: home, kernel: kernel, agent: try agentBinary(home: home)).build()
        return BootArtifacts(kernel: kernel.vmlinux, initramfs: initramfs, kernelVersion: kernel.version,
                             imageDisk: record.diskURL(in: home))
    }
}
