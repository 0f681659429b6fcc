import Foundation
import StasisCore

/// One loadable kernel module (.ko), described by its own `.modinfo` section.
public struct KernelModule: Sendable, Equatable {
    /// The module's name as the kernel knows it (`name=`; '-' already folded to '_').
    public let name: String
    /// Modules that must be loaded first (`depends=`), normalized like `name`.
    public let depends: [String]
    /// The .ko file on the host.
    public let file: URL

    /// The file name to store it under (e.g. `virtio-rng.ko`).
    public var fileName: String { file.lastPathComponent }

    /// Reads `name` and `depends` from the `.modinfo` section of the .ko at `file`.
    public init(contentsOf file: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: file) } catch {
            throw StasisError(.notFound, "cannot read kernel module \(file.path)", cause: error)
        }
        try self.init(elf: data, file: file)
    }

    /// Parses an already-read .ko image; `file` only names it.
    public init(elf data: Data, file: URL) throws {
        let info = try ModInfo.read(elf: data, path: file.path)
        let fallback = String(file.lastPathComponent.dropLast(file.pathExtension.count + 1))
        // modinfo always has name= on modern kernels; the file name is the same name by convention.
        self.name = KernelModule.normalize(info.first { $0.key == "name" }?.value ?? fallback)
        let depends = info.first { $0.key == "depends" }?.value ?? ""
        self.depends = depends.split(separator: ",").map { KernelModule.normalize(String($0)) }.filter { !$0.isEmpty }
        self.file = file
    }

    /// Module names treat '-' and '_' as the same (the kernel does too): `virtio-rng` is `virtio_rng`.
    public static func normalize(_ name: String) -> String {
        name.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "-", with: "_")
    }
}

/// Reads the key=value strings of an ELF64 file's `.modinfo` section.
public enum ModInfo {
    /// The NUL-separated `key=value` entries of `.modinfo`, in file order. Throws if `data` is not
    /// a little-endian ELF64 file or has no `.modinfo` section; `path` is only for messages.
    public static func read(elf data: Data, path: String) throws -> [(key: String, value: String)] {
        let bytes = [UInt8](data)
        func bad(_ why: String) -> StasisError {
            StasisError(.corrupted, "\(path) is not a usable kernel module: \(why)")
        }
        guard bytes.count >= 64, bytes[0] == 0x7f, bytes[1] == 0x45, bytes[2] == 0x4c, bytes[3] == 0x46 else {
            throw bad("no ELF header")
        }
        guard bytes[4] == 2, bytes[5] == 1 else { throw bad("not a little-endian 64-bit ELF file") }

        func u16(_ at: Int) throws -> Int {
            guard at >= 0, at + 2 <= bytes.count else { throw bad("truncated at \(at)") }
            return Int(bytes[at]) | Int(bytes[at + 1]) << 8
        }
        func u32(_ at: Int) throws -> Int {
            guard at >= 0, at + 4 <= bytes.count else { throw bad("truncated at \(at)") }
            var v = 0
            for i in 0 ..< 4 { v |= Int(bytes[at + i]) << (8 * i) }
            return v
        }
        func u64(_ at: Int) throws -> Int {
            guard at >= 0, at + 8 <= bytes.count else { throw bad("truncated at \(at)") }
            var v: UInt64 = 0
            for i in 0 ..< 8 { v |= UInt64(bytes[at + i]) << (8 * UInt64(i)) }
            guard v <= UInt64(Int.max) else { throw bad("offset out of range at \(at)") }
            return Int(v)
        }

        let shoff = try u64(0x28)
        let shentsize = try u16(0x3a)
        var shnum = try u16(0x3c)
        var shstrndx = try u16(0x3e)
        guard shoff > 0, shentsize >= 64 else { throw bad("no section header table") }
        // ELF extensions for many sections: the real counts live in section 0.
        if shnum == 0 { shnum = try u64(shoff + 32) }
        if shstrndx == 0xffff { shstrndx = try u32(shoff + 40) }
        guard shnum > 0, shstrndx < shnum,
              shoff <= bytes.count, shnum <= (bytes.count - shoff) / shentsize
        else { throw bad("section header table out of range") }

        struct Section { let nameOffset: Int; let offset: Int; let size: Int; let type: Int }
        func section(_ index: Int) throws -> Section {
            let base = shoff + index * shentsize
            return Section(nameOffset: try u32(base), offset: try u64(base + 24), size: try u64(base + 32), type: try u32(base + 4))
        }
        func contents(_ s: Section) throws -> ArraySlice<UInt8> {
            guard s.offset <= bytes.count, s.size <= bytes.count - s.offset else { throw bad("section data out of range") }
            return bytes[s.offset ..< s.offset + s.size]
        }

        let names = try contents(section(shstrndx))
        func name(at offset: Int) throws -> String {
            guard offset < names.count else { throw bad("section name out of range") }
            let start = names.startIndex + offset
            let end = names[start...].firstIndex(of: 0) ?? names.endIndex
            return String(decoding: names[start ..< end], as: UTF8.self)
        }

        for index in 0 ..< shnum {
            let s = try section(index)
            guard s.type != 8 /* SHT_NOBITS */, try name(at: s.nameOffset) == ".modinfo" else { continue }
            var result: [(key: String, value: String)] = []
            // Entries are NUL-terminated and may be separated by alignment padding (runs of NUL).
            for entry in try contents(s).split(separator: 0) {
                let text = String(decoding: entry, as: UTF8.self)
                guard let eq = text.firstIndex(of: "=") else { continue }
                result.append((String(text[..<eq]), String(text[text.index(after: eq)...])))
            }
            return result
        }
        throw bad("no .modinfo section")
    }
}

/// Finds modules in a kernel's lib/modules/<version> tree and orders them for loading.
public enum ModuleSet {
    /// The wanted modules plus everything they depend on, dependencies first. Modules built into
    /// the kernel (listed in modules.builtin) are left out. Throws naming the module when one is
    /// missing or the dependencies form a cycle.
    public static func resolve(wanted: [String], in modulesDirectory: URL) throws -> [KernelModule] {
        let files = try index(modulesDirectory)
        let builtin = try builtinModules(in: modulesDirectory)
        var loaded: [String: KernelModule] = [:]
        var done: Set<String> = []
        var order: [KernelModule] = []

        // Depth-first: a module goes in after everything it depends on. `path` is the chain being
        // visited, so meeting a name already on it is a cycle.
        func visit(_ name: String, path: [String]) throws {
            if done.contains(name) { return }
            if let at = path.firstIndex(of: name) {
                let cycle = (path[at...] + [name]).joined(separator: " -> ")
                throw StasisError(.corrupted, "kernel module \(name) depends on itself: \(cycle)")
            }
            if builtin.contains(name) {
                // Already in the kernel image: nothing to load.
                done.insert(name)
                return
            }
            guard let file = files[name] else {
                let neededBy = path.last.map { " (needed by \($0))" } ?? ""
                throw StasisError(.notFound, "kernel module \(name)\(neededBy) is neither in \(modulesDirectory.path) nor built into the kernel")
            }
            let module = try loaded[name] ?? load(file)
            loaded[name] = module
            for dependency in module.depends {
                try visit(dependency, path: path + [name])
            }
            done.insert(name)
            order.append(module)
        }

        for name in wanted {
            try visit(KernelModule.normalize(name), path: [])
        }
        return order
    }

    /// Names of the modules compiled into the kernel, from `modules.builtin` (normalized).
    public static func builtinModules(in modulesDirectory: URL) throws -> Set<String> {
        let url = modulesDirectory.appendingPathComponent("modules.builtin")
        guard FileManager.default.fileExists(atPath: url.path) else { return [] }
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw StasisError(.ioFailure, "cannot read \(url.path)", cause: error)
        }
        // Lines look like kernel/fs/ext4/ext4.ko.
        return Set(text.split(separator: "\n").compactMap { line -> String? in
            let file = line.split(separator: "/").last.map(String.init) ?? ""
            guard file.hasSuffix(".ko") else { return nil }
            return KernelModule.normalize(String(file.dropLast(3)))
        })
    }

    private static func load(_ file: URL) throws -> KernelModule {
        let name = file.lastPathComponent
        // Debian bookworm ships plain .ko files; newer kernels may compress them. Fail clearly
        // rather than putting a compressed module the guest cannot load into the initramfs.
        if name.hasSuffix(".ko.xz") || name.hasSuffix(".ko.zst") || name.hasSuffix(".ko.gz") {
            throw StasisError(.unsupported, "kernel module \(file.path) is compressed; Stasis only handles uncompressed .ko files so far")
        }
        return try KernelModule(contentsOf: file)
    }

    /// Every module file under the tree, by normalized name (file name without extension).
    private static func index(_ modulesDirectory: URL) throws -> [String: URL] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: modulesDirectory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw StasisError(.notFound, "no kernel modules folder at \(modulesDirectory.path)")
        }
        guard let walker = FileManager.default.enumerator(at: modulesDirectory, includingPropertiesForKeys: nil) else {
            throw StasisError(.ioFailure, "cannot list \(modulesDirectory.path)")
        }
        var files: [String: URL] = [:]
        for case let url as URL in walker {
            let fileName = url.lastPathComponent
            guard let range = fileName.range(of: ".ko", options: .backwards),
                  ["", ".xz", ".zst", ".gz"].contains(String(fileName[range.upperBound...]))
            else { continue }
            let name = KernelModule.normalize(String(fileName[..<range.lowerBound]))
            // Same name twice (e.g. an updates/ override): keep the path that sorts first so the
            // choice does not depend on directory listing order.
            if let existing = files[name], existing.path < url.path { continue }
            files[name] = url
        }
        return files
    }
}
