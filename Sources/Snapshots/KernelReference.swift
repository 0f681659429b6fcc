import ChunkStore
import Foundation
import StasisCore

/// The guest kernel as the reference RAM frames are stored against: QEMU loads each PT_LOAD
/// segment of vmlinux at its physical address, and a microvm's RAM file offset is the guest
/// physical address, so the kernel's pages in a snapshot sit at known places of a file the host
/// keeps anyway. Stored as deltas against it, they cost what the guest changed in them
/// (alternatives, data, bss): DESIGN.md's 10 MB of kernel in every boot snapshot goes to ~3 MB.
enum KernelReference {
    /// The reference for kernel `version` in `home`, or nil when it is not installed or not a
    /// 64-bit little-endian ELF file (frames are then stored plain). Its bytes are hard-linked
    /// (copied across file systems) to `references/<hex digest>` first, and read from there: a
    /// refetched kernel of the same version cannot change what a snapshot was stored against.
    static func load(home: StasisHome, version: String) -> FrameReference? {
        guard !version.isEmpty, !version.contains("/"), version != "." && version != ".." else { return nil }
        let vmlinux = home.kernels.appendingPathComponent(version).appendingPathComponent("vmlinux")
        guard let segments = try? loadSegments(vmlinux), !segments.isEmpty,
              let digest = try? cachedDigest(of: vmlinux),
              let stored = try? keep(vmlinux, digest: digest, home: home) else { return nil }
        return FrameReference(url: stored, digest: digest, segments: segments)
    }

    /// Where the store keeps the reference with `digest` ("sha256:<hex>").
    static func storedPath(home: StasisHome, digest: String) -> URL {
        home.references.appendingPathComponent(String(digest.dropFirst("sha256:".count)))
    }

    /// Links `file` to its place in `references/` unless it is there already; durable once this returns.
    private static func keep(_ file: URL, digest: String, home: StasisHome) throws -> URL {
        let stored = storedPath(home: home, digest: digest)
        if FileManager.default.fileExists(atPath: stored.path) { return stored }
        try FileManager.default.createDirectory(at: home.references, withIntermediateDirectories: true)
        if link(file.path, stored.path) != 0 && errno != EEXIST {
            // Another file system: a full copy, written aside and renamed into place.
            let temporary = home.references.appendingPathComponent(".tmp-\(UInt32.random(in: 0 ... .max))")
            do {
                try FileManager.default.copyItem(at: file, to: temporary)
                try AtomicFile.syncFile(temporary)
                try AtomicFile.rename(temporary, over: stored)
            } catch {
                try? FileManager.default.removeItem(at: temporary)
                throw error
            }
        }
        try AtomicFile.syncDirectory(home.references)
        return stored
    }

    /// The PT_LOAD segments of an ELF64 little-endian file: where each lands in guest physical
    /// memory and where its bytes are in the file.
    static func loadSegments(_ url: URL) throws -> [FrameReference.Segment] {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StasisError(.notFound, "cannot open \(url.path)", cause: Errno()) }
        defer { close(fd) }
        let header = readBytes(fd, count: 64, at: 0)
        guard header.count == 64, header[0 ..< 4].elementsEqual([0x7f, 0x45, 0x4c, 0x46]), header[4] == 2, header[5] == 1 else {
            throw StasisError(.unsupported, "\(url.path) is not a 64-bit little-endian ELF file")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StasisError(.ioFailure, "cannot stat \(url.path)", cause: Errno()) }
        let fileSize = UInt64(st.st_size)
        let entrySize = Int(le16(header, 54))
        let count = Int(le16(header, 56))
        guard let tableOffset = Int(exactly: le64(header, 32)), entrySize >= 56, count <= 64, tableOffset >= 64,
              UInt64(tableOffset) + UInt64(entrySize * count) <= fileSize else {
            throw StasisError(.unsupported, "\(url.path) has an unexpected program header table")
        }
        let table = readBytes(fd, count: entrySize * count, at: tableOffset)
        guard table.count == entrySize * count else { throw StasisError(.corrupted, "\(url.path) is truncated") }
        var segments: [FrameReference.Segment] = []
        for entry in 0 ..< count {
            let base = entry * entrySize
            guard le32(table, base) == 1 else { continue }  // PT_LOAD
            let fileOffset = le64(table, base + 8)
            let physical = le64(table, base + 24)
            let length = le64(table, base + 32)
            // Only segments whose bytes are all in the file (a truncated vmlinux gives fewer).
            guard length > 0, length < 1 << 32, physical < 1 << 40, fileOffset < fileSize, length <= fileSize - fileOffset else { continue }
            segments.append(FrameReference.Segment(offset: Int(physical), fileOffset: Int(fileOffset), length: Int(length)))
        }
        // Overlapping segments would make a frame's reference ambiguous: keep the first of each.
        var kept: [FrameReference.Segment] = []
        for segment in segments.sorted(by: { $0.offset < $1.offset }) where segment.offset >= (kept.last.map { $0.offset + $0.length } ?? 0) {
            kept.append(segment)
        }
        return kept
    }

    /// The file's SHA-256, computed once and kept beside it (`vmlinux.digest.json`) with the file
    /// identity it was computed for, so a restore does not hash 50 MB.
    static func cachedDigest(of url: URL) throws -> String {
        guard let identity = FileIdentity.of(url.path) else { throw StasisError(.notFound, "cannot stat \(url.path)", cause: Errno()) }
        let cache = url.deletingLastPathComponent().appendingPathComponent(url.lastPathComponent + ".digest.json")
        if let cached = try? AtomicFile.readJSON(CachedDigest.self, from: cache), cached.identity == identity {
            return cached.digest
        }
        let digest = try FrameReference.digest(of: url)
        try? AtomicFile.writeJSON(CachedDigest(identity: identity, digest: digest), to: cache)
        return digest
    }

    private struct CachedDigest: Codable {
        var identity: String
        var digest: String
    }

    private static func readBytes(_ fd: Int32, count: Int, at offset: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, got in
            got = 0
            guard let start = buffer.baseAddress else { return }
            while got < count {
                let n = pread(fd, start + got, count - got, off_t(offset + got))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                got += n
            }
        }
    }

    private static func le16(_ bytes: [UInt8], _ at: Int) -> UInt64 { UInt64(bytes[at]) | UInt64(bytes[at + 1]) << 8 }
    private static func le32(_ bytes: [UInt8], _ at: Int) -> UInt64 { le16(bytes, at) | le16(bytes, at + 2) << 16 }
    private static func le64(_ bytes: [UInt8], _ at: Int) -> UInt64 { le32(bytes, at) | le32(bytes, at + 4) << 32 }
}
