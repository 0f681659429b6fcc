import ArgumentParser
import Foundation
import LazyMemory
import Images
import Machines
import StasisCore

struct Doctor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check what is installed, which accelerator will be used and why, and what is missing."
    )

    @OptionGroup var global: GlobalOptions

    struct Check: Encodable {
        var name: String
        var ok: Bool
        var detail: String
        var fix: String?
    }

    func run() async throws {
        try await reportingErrors {
            let home = global.home
            var checks: [Check] = []
            func tool(_ name: String, _ package: String) {
                if let path = HostTool.which(name) {
                    checks.append(Check(name: name, ok: true, detail: path))
                } else {
                    checks.append(Check(name: name, ok: false, detail: "not installed", fix: "apt-get install \(package)"))
                }
            }
            tool("qemu-system-x86_64", "qemu-system-x86")
            tool("qemu-img", "qemu-utils")
            tool("mkfs.ext4", "e2fsprogs")
            tool("mmdebstrap", "mmdebstrap")
            tool("socat", "socat")
            tool("zstd", "zstd")
            // Optional: only `restore --lazy` needs it, so it never fails the check.
            checks.append(Check(name: "lazy restore", ok: true, detail: MemoryServer.isAvailable
                ? "available (/dev/fuse, \((try? MemoryServer.binary().path) ?? "stasis-memfs"))"
                : "unavailable: needs /dev/fuse readable and writable and stasis-memfs beside stasis (only `restore --lazy` uses it)"))
            if let kernel = try? KernelInfo.current(home: home) {
                checks.append(Check(name: "kernel", ok: true, detail: "\(kernel.version) (\(kernel.package) \(kernel.packageVersion))"))
            } else {
                checks.append(Check(name: "kernel", ok: false, detail: "no guest kernel in \(home.kernels.path)", fix: "scripts/fetch-kernel.sh"))
            }
            if let agent = try? BootArtifacts.agentBinary(home: home) {
                checks.append(Check(name: "guest agent", ok: true, detail: agent.path))
            } else {
                checks.append(Check(name: "guest agent", ok: false, detail: "stasis-init not installed", fix: "scripts/setup.sh"))
            }
            let accel = AcceleratorChoice.choose(.auto)
            checks.append(Check(name: "accelerator", ok: true, detail: "\(accel.kind.rawValue): \(accel.reason)"))
            if let khz = AcceleratorChoice.hostTSCkHz() {
                checks.append(Check(name: "tsc_early_khz", ok: true, detail: "\(khz) (passed to TCG guests)"))
            }
            let images = (try? await ImageStore(home: home).list()) ?? []
            checks.append(images.isEmpty
                ? Check(name: "images", ok: false, detail: "none", fix: "stasis image build debian")
                : Check(name: "images", ok: true, detail: images.map(\.name).joined(separator: ", ")))
            do {
                try home.prepare()
                checks.append(Check(name: "STASIS_HOME", ok: access(home.root.path, W_OK) == 0, detail: home.root.path))
            } catch {
                checks.append(Check(name: "STASIS_HOME", ok: false, detail: "\(error)", fix: "set STASIS_HOME to a writable folder"))
            }
            if global.json {
                try printJSON(checks)
            } else {
                for c in checks {
                    print("\(c.ok ? "ok  " : "MISSING") \(c.name): \(c.detail)\(c.fix.map { "  → \($0)" } ?? "")")
                }
            }
            if checks.contains(where: { !$0.ok }) { throw ExitCode(1) }
        }
    }
}
