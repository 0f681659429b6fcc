import Foundation
import Images
import StasisCore
import Testing

@Suite struct KernelModuleTests {
    // MARK: the real kernel installed by scripts/fetch-kernel.sh

    @Test func readsModinfoOfRealModules() throws {
        let kernel = try ImagesTestSupport.installedKernel()
        let rng = try KernelModule(contentsOf: ImagesTestSupport.moduleFile("virtio-rng", in: kernel))
        #expect(rng.name == "virtio_rng")
        #expect(rng.fileName == "virtio-rng.ko")
        let mmio = try KernelModule(contentsOf: ImagesTestSupport.moduleFile("virtio_mmio", in: kernel))
        #expect(mmio.name == "virtio_mmio")
        #expect(Set(mmio.depends).isSuperset(of: ["virtio", "virtio_ring"]), "\(mmio.depends)")
        let ring = try KernelModule(contentsOf: ImagesTestSupport.moduleFile("virtio_ring", in: kernel))
        #expect(!ring.depends.contains("virtio_mmio"))
    }

    @Test func resolvesTheBaseModulesInDependencyOrder() throws {
        let kernel = try ImagesTestSupport.installedKernel()
        let modules = try ModuleSet.resolve(wanted: InitramfsBuilder.baseModules, in: kernel.modulesDirectory)
        let names = modules.map(\.name)
        #expect(Set(names).count == names.count, "duplicates in \(names)")
        for wanted in InitramfsBuilder.baseModules {
            #expect(names.contains(wanted), "\(wanted) missing from \(names)")
        }
        // Every dependency a module declares is loaded before it (none of these are built in).
        let builtin = try ModuleSet.builtinModules(in: kernel.modulesDirectory)
        for (index, module) in modules.enumerated() {
            for dependency in module.depends where !builtin.contains(dependency) {
                let at = try #require(names.firstIndex(of: dependency), "\(dependency) (for \(module.name)) missing")
                #expect(at < index, "\(dependency) must come before \(module.name) in \(names)")
            }
        }
        let ring = try #require(names.firstIndex(of: "virtio_ring"))
        let mmio = try #require(names.firstIndex(of: "virtio_mmio"))
        #expect(ring < mmio)
    }

    @Test func missingRealModuleIsAClearError() throws {
        let kernel = try ImagesTestSupport.installedKernel()
        let error = try #require(throws: StasisError.self) {
            try ModuleSet.resolve(wanted: ["virtio_mmio", "no_such_module"], in: kernel.modulesDirectory)
        }
        #expect(error.code == .notFound)
        #expect(error.message.contains("no_such_module"), "\(error.message)")
    }

    @Test func builtInModulesAreSkipped() throws {
        let kernel = try ImagesTestSupport.installedKernel()
        let builtin = try ModuleSet.builtinModules(in: kernel.modulesDirectory)
        let one = try #require(builtin.sorted().first, "modules.builtin is empty")
        #expect(try ModuleSet.resolve(wanted: [one], in: kernel.modulesDirectory).isEmpty)
    }

    // MARK: synthetic modules (exact control over depends=)

    @Test func ordersSyntheticModulesFromDepends() throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.writeModule(dir, "kernel/c.ko", name: "c", depends: "b,a")
        try Self.writeModule(dir, "kernel/sub/b.ko", name: "b", depends: "a-dash")
        try Self.writeModule(dir, "kernel/a-dash.ko", name: "a_dash", depends: "")
        try Self.writeModule(dir, "kernel/a.ko", name: "a", depends: "")
        let order = try ModuleSet.resolve(wanted: ["c"], in: dir).map(\.name)
        #expect(order == ["a_dash", "b", "a", "c"])
        // Asking for a dependency first changes nothing but where it lands; no duplicates.
        let again = try ModuleSet.resolve(wanted: ["a-dash", "c", "b"], in: dir).map(\.name)
        #expect(again == ["a_dash", "b", "a", "c"])
    }

    @Test func cycleIsAClearError() throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.writeModule(dir, "kernel/x.ko", name: "x", depends: "y")
        try Self.writeModule(dir, "kernel/y.ko", name: "y", depends: "z")
        try Self.writeModule(dir, "kernel/z.ko", name: "z", depends: "x")
        let error = try #require(throws: StasisError.self) { try ModuleSet.resolve(wanted: ["x"], in: dir) }
        #expect(error.message.contains("x -> y -> z -> x"), "\(error.message)")
    }

    @Test func missingDependencyNamesBothModules() throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.writeModule(dir, "kernel/top.ko", name: "top", depends: "ghost")
        let error = try #require(throws: StasisError.self) { try ModuleSet.resolve(wanted: ["top"], in: dir) }
        #expect(error.code == .notFound)
        #expect(error.message.contains("ghost") && error.message.contains("needed by top"), "\(error.message)")
    }

    @Test func builtinListSkipsSyntheticModules() throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.writeModule(dir, "kernel/user.ko", name: "user", depends: "core-lib")
        try Data("kernel/lib/core-lib.ko\n".utf8).write(to: dir.appendingPathComponent("modules.builtin"))
        #expect(try ModuleSet.resolve(wanted: ["user", "core_lib"], in: dir).map(\.name) == ["user"])
    }

    @Test func compressedModulesAreRefusedClearly() throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("kernel"), withIntermediateDirectories: true)
        try Data([0xfd, 0x37, 0x7a]).write(to: dir.appendingPathComponent("kernel/packed.ko.xz"))
        let error = try #require(throws: StasisError.self) { try ModuleSet.resolve(wanted: ["packed"], in: dir) }
        #expect(error.code == .unsupported)
        #expect(error.message.contains("packed.ko.xz"))
    }

    @Test func parsesSectionsNotStrings() throws {
        // A decoy "name=" string outside .modinfo must be ignored.
        let elf = Self.elf(sections: [
            (".rodata", Data("name=decoy\0depends=decoy\0".utf8)),
            (".modinfo", Data("license=GPL\0\0\0depends=p,q-r\0name=real-name\0".utf8)),
        ])
        let module = try KernelModule(elf: elf, file: URL(fileURLWithPath: "/x/real-name.ko"))
        #expect(module.name == "real_name")
        #expect(module.depends == ["p", "q_r"])
        let info = try ModInfo.read(elf: elf, path: "x")
        #expect(info.map(\.key) == ["license", "depends", "name"])
    }

    @Test func malformedFilesAreCorrupted() throws {
        let url = URL(fileURLWithPath: "/x/bad.ko")
        let notElf = #expect(throws: StasisError.self) { try KernelModule(elf: Data(repeating: 1, count: 100), file: url) }
        #expect(notElf?.code == .corrupted)
        let noModinfo = #expect(throws: StasisError.self) {
            try KernelModule(elf: Self.elf(sections: [(".text", Data([0x90]))]), file: url)
        }
        #expect(noModinfo?.message.contains("no .modinfo") == true)
        var truncated = Self.elf(sections: [(".modinfo", Data("name=t\0".utf8))])
        truncated.removeLast(40)
        let cut = #expect(throws: StasisError.self) { try KernelModule(elf: truncated, file: url) }
        #expect(cut?.code == .corrupted)
    }

    // MARK: helpers

    static func writeModule(_ root: URL, _ path: String, name: String, depends: String) throws {
        let url = root.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let modinfo = Data("license=GPL\0depends=\(depends)\0name=\(name)\0".utf8)
        try elf(sections: [(".text", Data([0xc3])), (".modinfo", modinfo)]).write(to: url)
    }

    /// A minimal relocatable ELF64 (little-endian): a null section, the given ones, and .shstrtab.
    static func elf(sections: [(String, Data)]) -> Data {
        var names = Data([0])
        var nameOffsets: [UInt32] = []
        for (name, _) in sections + [(".shstrtab", Data())] {
            nameOffsets.append(UInt32(names.count))
            names.append(contentsOf: Array(name.utf8) + [0])
        }
        var body = Data()
        var offsets: [UInt64] = []
        for (_, data) in sections + [(".shstrtab", names)] {
            offsets.append(UInt64(64 + body.count))
            body.append(data)
        }
        while (64 + body.count) % 8 != 0 { body.append(0) }
        let shoff = UInt64(64 + body.count)
        let count = sections.count + 2

        var out = Data()
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        out.append(contentsOf: [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8))
        le(UInt16(1)); le(UInt16(62)); le(UInt32(1)) // ET_REL, x86-64, version
        le(UInt64(0)); le(UInt64(0)); le(shoff) // entry, phoff, shoff
        le(UInt32(0)); le(UInt16(64)); le(UInt16(0)); le(UInt16(0)) // flags, ehsize, phentsize, phnum
        le(UInt16(64)); le(UInt16(count)); le(UInt16(count - 1)) // shentsize, shnum, shstrndx
        out.append(body)
        out.append(Data(repeating: 0, count: 64)) // section 0
        let all = sections + [(".shstrtab", names)]
        for (index, (_, data)) in all.enumerated() {
            le(nameOffsets[index]); le(UInt32(index == all.count - 1 ? 3 : 1)) // name, type (STRTAB / PROGBITS)
            le(UInt64(0)); le(UInt64(0)); le(offsets[index]); le(UInt64(data.count)) // flags, addr, offset, size
            le(UInt32(0)); le(UInt32(0)); le(UInt64(1)); le(UInt64(0)) // link, info, addralign, entsize
        }
        return out
    }
}
