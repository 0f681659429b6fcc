import Foundation
import StasisCore

/// Writes a cpio archive in the "newc" format (magic 070701), the only one the Linux kernel
/// unpacks as an initramfs. Output is deterministic: inode numbers are assigned in order and
/// mtime defaults to 0, so the same entries give the same bytes.
public struct CpioWriter: Sendable {
    private var data = Data()
    private var paths: Set<String> = []
    private var nextInode: UInt32 = 1
    private var finished = false

    /// An empty archive.
    public init() {}

    /// Adds a directory. Missing parent directories are added first (mode 0755).
    public mutating func addDirectory(_ path: String, mode: UInt32 = 0o755, uid: UInt32 = 0, gid: UInt32 = 0, mtime: UInt32 = 0) throws {
        let name = try normalize(path)
        try addParents(of: name)
        try append(name: name, mode: S_IFDIR_ | (mode & 0o7777), uid: uid, gid: gid, nlink: 2, mtime: mtime, body: Data())
    }

    /// Adds a regular file holding `contents`.
    public mutating func addFile(_ path: String, contents: Data, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, mtime: UInt32 = 0) throws {
        let name = try normalize(path)
        try addParents(of: name)
        try append(name: name, mode: S_IFREG_ | (mode & 0o7777), uid: uid, gid: gid, nlink: 1, mtime: mtime, body: contents)
    }

    /// Adds a symbolic link pointing at `target` (newc stores the target as the entry's data).
    public mutating func addSymlink(_ path: String, target: String, uid: UInt32 = 0, gid: UInt32 = 0, mtime: UInt32 = 0) throws {
        let name = try normalize(path)
        guard !target.isEmpty, !target.utf8.contains(0) else {
            throw StasisError(.invalidArgument, "cpio: bad symlink target '\(target)' for \(path)")
        }
        try addParents(of: name)
        try append(name: name, mode: S_IFLNK_ | 0o777, uid: uid, gid: gid, nlink: 1, mtime: mtime, body: Data(target.utf8))
    }

    /// Adds a character-device node (e.g. /dev/console is 5:1), so the kernel has a console
    /// before devtmpfs is mounted.
    public mutating func addCharacterDevice(_ path: String, major: UInt32, minor: UInt32, mode: UInt32 = 0o600, uid: UInt32 = 0, gid: UInt32 = 0, mtime: UInt32 = 0) throws {
        let name = try normalize(path)
        try addParents(of: name)
        try append(name: name, mode: S_IFCHR_ | (mode & 0o7777), uid: uid, gid: gid, nlink: 1, mtime: mtime, body: Data(), rdev: (major, minor))
    }

    /// Appends the TRAILER!!! entry and returns the archive. Adding after this is an error.
    public mutating func finish() throws -> Data {
        guard !finished else { throw StasisError(.invalidState, "cpio: archive already finished") }
        // The trailer has inode 0 and nlink 1, as GNU cpio writes it.
        appendRaw(name: "TRAILER!!!", inode: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, body: Data(), rdev: (0, 0))
        finished = true
        return data
    }

    // Paths are stored relative ("etc/x"): the kernel accepts both, but cpio -i refuses to write
    // absolute names by default.
    private func normalize(_ path: String) throws -> String {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !parts.isEmpty, !path.utf8.contains(0), !parts.contains(where: { $0 == "." || $0 == ".." }) else {
            throw StasisError(.invalidArgument, "cpio: bad path '\(path)'")
        }
        return parts.joined(separator: "/")
    }

    private mutating func addParents(of name: String) throws {
        var parents: [String] = []
        var current = name
        while let slash = current.lastIndex(of: "/") {
            current = String(current[..<slash])
            if paths.contains(current) { break }
            parents.append(current)
        }
        for parent in parents.reversed() {
            try append(name: parent, mode: S_IFDIR_ | 0o755, uid: 0, gid: 0, nlink: 2, mtime: 0, body: Data())
        }
    }

    private mutating func append(name: String, mode: UInt32, uid: UInt32, gid: UInt32, nlink: UInt32, mtime: UInt32, body: Data, rdev: (UInt32, UInt32) = (0, 0)) throws {
        guard !finished else { throw StasisError(.invalidState, "cpio: cannot add \(name) after finish()") }
        guard paths.insert(name).inserted else { throw StasisError(.alreadyExists, "cpio: \(name) added twice") }
        guard body.count <= Int(UInt32.max) else { throw StasisError(.invalidArgument, "cpio: \(name) is larger than 4 GiB") }
        appendRaw(name: name, inode: nextInode, mode: mode, uid: uid, gid: gid, nlink: nlink, mtime: mtime, body: body, rdev: rdev)
        nextInode += 1
    }

    private mutating func appendRaw(name: String, inode: UInt32, mode: UInt32, uid: UInt32, gid: UInt32, nlink: UInt32, mtime: UInt32, body: Data, rdev: (UInt32, UInt32)) {
        let nameBytes = Array(name.utf8) + [0]
        let fields: [UInt32] = [
            inode, mode, uid, gid, nlink, mtime, UInt32(body.count),
            0, 0, // devmajor, devminor: the device holding the file; meaningless here
            rdev.0, rdev.1,
            UInt32(nameBytes.count),
            0, // check: only used by the 070702 "crc" variant
        ]
        var header = "070701"
        for field in fields { header += hex8(field) }
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: nameBytes)
        pad()
        data.append(body)
        pad()
    }

    // newc aligns both the header+name and the data to 4 bytes.
    private mutating func pad() {
        let extra = (4 - data.count % 4) % 4
        if extra > 0 { data.append(contentsOf: [UInt8](repeating: 0, count: extra)) }
    }
}

private let S_IFDIR_: UInt32 = 0o040000
private let S_IFREG_: UInt32 = 0o100000
private let S_IFLNK_: UInt32 = 0o120000
private let S_IFCHR_: UInt32 = 0o020000

private func hex8(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: 8 - digits.count) + digits
}
