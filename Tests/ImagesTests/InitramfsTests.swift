import Foundation
import Images
import StasisCore
import Testing

/// Shared helpers for the kernel, module and initramfs tests.
enum ImagesTestSupport {
    /// The kernel scripts/fetch-kernel.sh installed. Tests that need it fail (not skip) without it:
    /// CI installs it first, so its absence is a real setup fault.
    static func installedKernel() throws -> KernelInfo {
        let home = StasisHome.fromEnvironment()
        do {
            return try KernelInfo.current(home: home)
        } catch {
            throw StasisError(.missingDependency, "this test needs the guest kernel in \(home.kernels.path): run scripts/fetch-kernel.sh first", cause: error)
        }
    }

    /// The .ko called `name` (file name without .ko) anywhere in the kernel's modules tree.
    static func moduleFile(_ name: String, in kernel: KernelInfo) throws -> URL {
        let walker = FileManager.default.enumerator(at: kernel.modulesDirectory, includingPropertiesForKeys: nil)
        while let url = walker?.nextObject() as? URL {
            if url.lastPathComponent == "\(name).ko" { return url }
        }
        throw StasisError(.notFound, "\(name).ko not in \(kernel.modulesDirectory.path)")
    }

    /// A fresh empty folder under the system temp folder.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("stasis-images-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

@Suite struct InitramfsTests {
    @Test func missingKernelIsAClearError() throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let home = StasisHome(root: dir)
        let error = try #require(throws: StasisError.self) { try KernelInfo.current(home: home) }
        #expect(error.code == .missingDependency)
        #expect(error.message.contains("run scripts/setup.sh") && error.message.contains(home.kernels.path), "\(error.message)")
    }

    @Test func currentKernelResolvesToItsVersionedFolder() throws {
        let kernel = try ImagesTestSupport.installedKernel()
        #expect(kernel.directory.lastPathComponent == kernel.version)
        #expect(kernel.package.hasPrefix("linux-image-\(kernel.version)"))
        #expect(!kernel.packageVersion.isEmpty)
        let head = try FileHandle(forReadingFrom: kernel.vmlinux).read(upToCount: 4)
        #expect(head == Data([0x7f, 0x45, 0x4c, 0x46]))
        #expect(FileManager.default.fileExists(atPath: kernel.config.path))
    }

    @Test func currentKernelFollowsTheSymlink() throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let home = StasisHome(root: dir)
        let versioned = home.kernels.appendingPathComponent("9.9.9-test")
        try FileManager.default.createDirectory(at: versioned, withIntermediateDirectories: true)
        try Data(#"{"version":"9.9.9-test","package":"p","packageVersion":"1"}"#.utf8)
            .write(to: versioned.appendingPathComponent("kernel.json"))
        try FileManager.default.createSymbolicLink(atPath: home.currentKernel.path, withDestinationPath: "9.9.9-test")
        let kernel = try KernelInfo.current(home: home)
        #expect(kernel.version == "9.9.9-test")
        #expect(kernel.directory.path == versioned.resolvingSymlinksInPath().path)
        #expect(kernel.modulesDirectory.lastPathComponent == "modules")
    }

    @Test func wantedModulesFollowTheConfig() throws {
        let kernel = try ImagesTestSupport.installedKernel()
        let builder = InitramfsBuilder(home: StasisHome(root: URL(fileURLWithPath: "/nonexistent")), kernel: kernel, agent: URL(fileURLWithPath: "/nonexistent"))
        let ext4 = try kernel.configValue("CONFIG_EXT4_FS")
        #expect(ext4 == "y" || ext4 == "m")
        #expect(try builder.wantedModules().contains("ext4") == (ext4 == "m"))
    }

    @Test func buildsAnArchiveTheKernelCanUse() async throws {
        let kernel = try ImagesTestSupport.installedKernel()
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let agent = dir.appendingPathComponent("stasis-init")
        let agentBytes = Data((0 ..< 100_003).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        try agentBytes.write(to: agent)
        let builder = InitramfsBuilder(home: StasisHome(root: dir.appendingPathComponent("home")), kernel: kernel, agent: agent)
        let modules = try builder.modules()

        let archive = try builder.build()
        #expect(archive.deletingLastPathComponent().path == builder.home.initramfs.path)
        #expect(archive.pathExtension == "cpio" && archive.deletingPathExtension().lastPathComponent.count == 64)

        let listing = try await HostTool.run("cpio", ["-tv", "--quiet", "-F", archive.path])
        let lines = listing.standardOutput.split(separator: "\n")
        let names = Set(lines.compactMap { $0.split(separator: " ").last.map(String.init) })
        for expected in ["init", "dev", "proc", "sys", "tmp", "run", "newroot", "etc", "etc/stasis/modules", "dev/console"] {
            #expect(names.contains(expected), "\(expected) missing from the archive")
        }
        for module in modules { #expect(names.contains("lib/modules/\(module.fileName)")) }
        let console = try #require(lines.first { $0.hasSuffix(" dev/console") })
        #expect(console.hasPrefix("c") && (console.contains("5,   1") || console.contains("5, 1")), "\(console)")

        let out = dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        // Skip the device node: creating it needs root.
        try await HostTool.run("cpio", ["-i", "-d", "--quiet", "-F", archive.path, "-D", out.path, "-f", "dev/console"])
        #expect(try Data(contentsOf: out.appendingPathComponent("init")) == agentBytes)
        let initMode = try #require(FileManager.default.attributesOfItem(atPath: out.appendingPathComponent("init").path)[.posixPermissions] as? Int)
        #expect(initMode == 0o755)
        let list = try String(contentsOf: out.appendingPathComponent("etc/stasis/modules"), encoding: .utf8)
        #expect(list == modules.map { $0.fileName + "\n" }.joined())
        #expect(list.split(separator: "\n").contains("virtio_mmio.ko"))
        for module in modules {
            let stored = try Data(contentsOf: out.appendingPathComponent("lib/modules/\(module.fileName)"))
            #expect(stored == (try Data(contentsOf: module.file)), "\(module.fileName) differs")
        }
    }

    @Test func buildIsCachedByItsInputs() throws {
        let kernel = try ImagesTestSupport.installedKernel()
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let agent = dir.appendingPathComponent("stasis-init")
        try Data("agent v1".utf8).write(to: agent)
        let builder = InitramfsBuilder(home: StasisHome(root: dir.appendingPathComponent("home")), kernel: kernel, agent: agent)

        let first = try builder.build()
        let before = try FileManager.default.attributesOfItem(atPath: first.path)
        let second = try builder.build()
        let after = try FileManager.default.attributesOfItem(atPath: second.path)
        #expect(first == second)
        // A rebuild would rename a new file into place: new inode.
        #expect(before[.systemFileNumber] as? UInt64 == after[.systemFileNumber] as? UInt64)
        #expect(before[.modificationDate] as? Date == after[.modificationDate] as? Date)
        #expect(try FileManager.default.contentsOfDirectory(atPath: builder.home.initramfs.path).filter { $0.hasSuffix(".cpio") }.count == 1)

        // Same content, new file (new inode and times): the quick index misses, the content key hits.
        let copy = dir.appendingPathComponent("agent-copy")
        try FileManager.default.copyItem(at: agent, to: copy)
        #expect(try InitramfsBuilder(home: builder.home, kernel: kernel, agent: copy).build() == first)

        try Data("agent v2".utf8).write(to: agent)
        let third = try builder.build()
        #expect(third != first)
        #expect(FileManager.default.fileExists(atPath: third.path))

        // Same inputs in a fresh home give the same bytes: the archive is deterministic.
        let other = InitramfsBuilder(home: StasisHome(root: dir.appendingPathComponent("home2")), kernel: kernel, agent: agent)
        let fourth = try other.build()
        #expect(fourth.lastPathComponent == third.lastPathComponent)
        #expect(try Data(contentsOf: fourth) == (try Data(contentsOf: third)))
    }

    @Test func missingAgentIsAClearError() throws {
        let kernel = try ImagesTestSupport.installedKernel()
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let builder = InitramfsBuilder(home: StasisHome(root: dir), kernel: kernel, agent: dir.appendingPathComponent("nope"))
        let error = try #require(throws: StasisError.self) { try builder.build() }
        #expect(error.code == .missingDependency)
        #expect(error.message.contains("nope"))
    }
}

@Suite struct Sha256Tests {
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
    ])
    func knownVectors(input: String, expected: String) {
        #expect(Sha256.hex(Data(input.utf8)) == expected)
    }

    @Test func oneMillionAs() {
        #expect(Sha256.hex(Data(repeating: 0x61, count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func matchesSha256sumAtBlockBoundaries() async throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for length in [1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 70_001] {
            let data = Data((0 ..< length).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ length) })
            let file = dir.appendingPathComponent("\(length)")
            try data.write(to: file)
            let expected = try await HostTool.run("sha256sum", [file.path]).standardOutput.prefix(64)
            #expect(Sha256.hex(data) == String(expected), "length \(length)")
            // Fed in uneven pieces, the digest is the same.
            var hash = Sha256()
            var offset = 0
            for piece in [1, 3, 60, 7, 200].cycled(until: length) {
                let end = min(length, offset + piece)
                hash.update(data.subdata(in: offset ..< end))
                offset = end
            }
            #expect(hash.hexDigest() == String(expected), "pieces, length \(length)")
        }
    }
}

private extension Array where Element == Int {
    /// Repeats the sizes until they add up to at least `total`.
    func cycled(until total: Int) -> [Int] {
        var out: [Int] = []
        var sum = 0
        while sum < total {
            let next = self[out.count % count]
            out.append(next)
            sum += next
        }
        return out
    }
}
