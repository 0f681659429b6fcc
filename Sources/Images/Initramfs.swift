import Foundation
import StasisCore

/// Builds the guest's initramfs: the guest agent as /init, the kernel modules it must load (in
/// load order, listed in /etc/stasis/modules), and the few folders and nodes PID 1 needs.
/// Results are cached in `home.initramfs` under a hash of everything that goes in.
public struct InitramfsBuilder: Sendable {
    /// Drivers every guest needs on QEMU microvm: virtio-mmio transport, disk, agent port, RNG,
    /// network, memory balloon. Their dependencies are found from the modules themselves.
    public static let baseModules = ["virtio_mmio", "virtio_blk", "virtio_console", "virtio_rng", "virtio_net", "virtio_balloon"]
    /// Where the load-order list is stored in the archive: one .ko file name per line.
    public static let moduleListPath = "etc/stasis/modules"
    /// Where the module files are stored in the archive.
    public static let moduleDirectory = "lib/modules"
    /// Bump when the archive layout changes, so old cached archives are not reused.
    static let layoutVersion = "stasis-initramfs-1"

    /// The Stasis home whose cache folder receives the archive.
    public let home: StasisHome
    /// The kernel whose modules go in.
    public let kernel: KernelInfo
    /// The guest agent binary (a static ELF), stored as /init.
    public let agent: URL

    /// A builder for `kernel` and `agent`; nothing is read until `build()`.
    public init(home: StasisHome, kernel: KernelInfo, agent: URL) {
        self.home = home
        self.kernel = kernel
        self.agent = agent
    }

    /// The module names asked for: the base drivers, plus ext4 when this kernel builds it as a
    /// module (the root disk is ext4; Debian's cloud kernel has it built in).
    public func wantedModules() throws -> [String] {
        var wanted = Self.baseModules
        if try kernel.configValue("CONFIG_EXT4_FS") == "m" { wanted.append("ext4") }
        return wanted
    }

    /// The modules that go in, dependencies first.
    public func modules() throws -> [KernelModule] {
        try ModuleSet.resolve(wanted: wantedModules(), in: kernel.modulesDirectory)
    }

    /// Builds the archive (or finds it already built) and returns its path,
    /// `home.initramfs/<sha256>.cpio`.
    public func build() throws -> URL {
        // Fast path: the same files (by inode, size and change time) as last time give the same
        // archive, found without reading and hashing 7 MB on every `stasis run`.
        let modules = try modules()
        let quickKey = Sha256.hex(Data(([agent] + modules.map(\.file)).map(Self.fileIdentity).joined(separator: "\n").utf8)
            + Data("\(Self.layoutVersion) \(kernel.version) \(kernel.packageVersion)".utf8))
        let index = home.initramfs.appendingPathComponent("index/\(quickKey)")
        if let name = try? String(contentsOf: index, encoding: .utf8) {
            let cached = home.initramfs.appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: cached.path) { return cached }
        }
        let output = try buildByContent(modules)
        try? FileManager.default.createDirectory(at: index.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? AtomicFile.write(Data(output.lastPathComponent.utf8), to: index)
        return output
    }

    /// Path, inode, size and change time: changes whenever the file's content may have.
    private static func fileIdentity(_ url: URL) -> String {
        var st = stat()
        guard stat(url.path, &st) == 0 else { return "\(url.path) missing" }
        return "\(url.path) \(st.st_ino) \(st.st_size) \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
    }

    private func buildByContent(_ modules: [KernelModule]) throws -> URL {
        let agentData: Data
        do { agentData = try Data(contentsOf: agent) } catch {
            throw StasisError(.missingDependency, "cannot read the guest agent \(agent.path): run scripts/setup.sh", cause: error)
        }
        var moduleData: [Data] = []
        for module in modules {
            do { moduleData.append(try Data(contentsOf: module.file)) } catch {
                throw StasisError(.ioFailure, "cannot read kernel module \(module.file.path)", cause: error)
            }
        }

        // The key covers every byte that goes in, so a changed agent or a refetched kernel of the
        // same version never reuses a stale archive.
        var key = Sha256()
        key.update("\(Self.layoutVersion)\nagent \(Sha256.hex(agentData))\nkernel \(kernel.version) \(kernel.packageVersion)\n")
        for (module, data) in zip(modules, moduleData) {
            key.update("module \(module.fileName) \(Sha256.hex(data))\n")
        }
        let output = home.initramfs.appendingPathComponent("\(key.hexDigest()).cpio")
        if FileManager.default.fileExists(atPath: output.path) { return output }

        var cpio = CpioWriter()
        for folder in ["dev", "proc", "sys", "run", "newroot", "etc", "etc/stasis", "lib", Self.moduleDirectory] {
            try cpio.addDirectory(folder)
        }
        try cpio.addDirectory("tmp", mode: 0o1777)
        // The kernel opens /dev/console for PID 1's stdio before any devtmpfs exists.
        try cpio.addCharacterDevice("dev/console", major: 5, minor: 1, mode: 0o600)
        try cpio.addFile("init", contents: agentData, mode: 0o755)
        for (module, data) in zip(modules, moduleData) {
            try cpio.addFile("\(Self.moduleDirectory)/\(module.fileName)", contents: data, mode: 0o644)
        }
        let list = modules.map { $0.fileName + "\n" }.joined()
        try cpio.addFile(Self.moduleListPath, contents: Data(list.utf8), mode: 0o644)

        do { try FileManager.default.createDirectory(at: home.initramfs, withIntermediateDirectories: true) } catch {
            throw StasisError(.ioFailure, "cannot create \(home.initramfs.path)", cause: error)
        }
        try AtomicFile.write(cpio.finish(), to: output)
        return output
    }
}
