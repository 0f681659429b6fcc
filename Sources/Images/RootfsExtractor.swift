import Foundation
import StasisCore

/// Writes tar entries into a root filesystem folder, as root: files, folders, symlinks, hard links,
/// devices and fifos with their mode, owner and mtime. Every path is resolved from the root one
/// component at a time without following symlinks, so a hostile archive cannot write outside the root.
///
/// With `whiteouts` on, an archive is an image layer: `.wh.NAME` removes NAME from lower layers and
/// `.wh..wh..opq` hides a folder's lower-layer content; whiteout files themselves are never written.
public final class RootfsExtractor {
    private let rootFD: Int32
    private let root: URL
    /// The last parent folder opened: entries of one folder come together, so this saves most walks.
    private var cachedParent: (path: String, fd: Int32)?
    /// Paths written by the current layer, and their ancestors: an opaque folder keeps only these.
    private var touched: Set<String> = []
    private var touchedAncestors: Set<String> = []
    /// Folder metadata is applied after the layer, or adding children would reset the mtimes.
    private var folderMetadata: [String: TarEntry] = [:]

    /// Extracts into `root`, an existing folder.
    public init(root: URL) throws {
        self.root = root
        rootFD = open(root.path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard rootFD >= 0 else { throw StasisError(.ioFailure, "cannot open folder \(root.path)", cause: Errno()) }
    }

    deinit {
        dropCachedParent()
        close(rootFD)
    }

    /// Extracts every entry of `reader`; `label` names the archive in errors. Throws
    /// `.invalidArgument` ("… entry 'x' …: refused because …") for any entry that would escape the root.
    public func extract(_ reader: TarReader, label: String, whiteouts: Bool) throws {
        touched = []
        touchedAncestors = []
        folderMetadata = [:]
        while let entry = try reader.next() {
            try Task.checkCancellation()
            try apply(entry, reader: reader, label: label, whiteouts: whiteouts)
        }
        try applyFolderMetadata()
    }

    // MARK: - One entry

    private func apply(_ entry: TarEntry, reader: TarReader, label: String, whiteouts: Bool) throws {
        func refuse(_ why: String) -> StasisError {
            StasisError(.invalidArgument, "\(label): entry '\(entry.path)' refused because \(why)")
        }
        let parts = try components(entry.path, refuse: refuse)
        guard let name = parts.last else {
            // "./" is the root itself: only its metadata can change.
            guard entry.kind == .directory else { throw refuse("it would replace the root folder") }
            folderMetadata[""] = entry
            return
        }
        let parentParts = Array(parts.dropLast())
        let key = parts.joined(separator: "/")
        if whiteouts, name.hasPrefix(".wh.") {
            try applyWhiteout(name: name, parentParts: parentParts, refuse: refuse)
            return
        }

        var linkParentFD: Int32 = -1
        var linkName = ""
        switch entry.kind {
        case .symlink:
            guard !entry.linkTarget.isEmpty else { throw refuse("its symlink target is empty") }
            if !entry.linkTarget.hasPrefix("/") {
                // Absolute targets resolve inside the guest; relative ones must not climb above the root.
                var depth = parentParts.count
                for part in entry.linkTarget.split(separator: "/", omittingEmptySubsequences: true) {
                    if part == ".." { depth -= 1 } else if part != "." { depth += 1 }
                    if depth < 0 { throw refuse("its symlink target '\(entry.linkTarget)' climbs above the root") }
                }
            }
        case .hardLink:
            let target = try components(entry.linkTarget, refuse: { why in
                refuse("its hard link target '\(entry.linkTarget)' \(why.replacingOccurrences(of: "its path ", with: ""))")
            })
            guard let targetName = target.last else { throw refuse("its hard link target is the root folder") }
            do {
                linkParentFD = try openFolder(Array(target.dropLast()), create: false, refuse: { why in
                    refuse("its hard link target '\(entry.linkTarget)' is unsafe: \(why)")
                })
            } catch let error as StasisError where error.code == .notFound {
                throw StasisError(.corrupted, "\(label): entry '\(entry.path)' is a hard link to '\(entry.linkTarget)', which is not in the archive before it")
            }
            linkName = targetName
        default:
            break
        }
        defer { if linkParentFD >= 0, linkParentFD != rootFD { close(linkParentFD) } }

        let parentFD = try parentFolder(parentParts, refuse: refuse)
        // Replace whatever is there, except that a folder over a folder merges.
        if let existing = lstatAt(parentFD, name) {
            if !(entry.kind == .directory && existing.st_mode & S_IFMT == S_IFDIR) {
                try removeEntry(parentFD, name, key: key)
            }
        }
        switch entry.kind {
        case .regular:
            try writeFile(entry, parentFD: parentFD, name: name, reader: reader, label: label)
        case .directory:
            if lstatAt(parentFD, name) == nil {
                try check(mkdirat(parentFD, name, 0o700), "create folder", entry.path)
            }
            folderMetadata[key] = entry
        case .symlink:
            try check(symlinkat(entry.linkTarget, parentFD, name), "create symlink", entry.path)
            try setOwnerAndTime(parentFD, name, entry, mode: nil)
        case .hardLink:
            guard lstatAt(linkParentFD, linkName) != nil else {
                throw StasisError(.corrupted, "\(label): entry '\(entry.path)' is a hard link to '\(entry.linkTarget)', which is not in the archive before it")
            }
            try check(linkat(linkParentFD, linkName, parentFD, name, 0), "create hard link", entry.path)
        case .characterDevice, .blockDevice, .fifo:
            let type: mode_t = entry.kind == .characterDevice ? 0o020000 : entry.kind == .blockDevice ? 0o060000 : 0o010000
            let dev = Self.makeDevice(entry.deviceMajor, entry.deviceMinor)
            try check(mknodat(parentFD, name, type | 0o600, dev), "create device node", entry.path)
            try setOwnerAndTime(parentFD, name, entry, mode: entry.mode)
        }
        markTouched(key)
    }

    private func writeFile(_ entry: TarEntry, parentFD: Int32, name: String, reader: TarReader, label: String) throws {
        let fd = openat(parentFD, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot create \(root.path)/\(entry.path)", cause: Errno()) }
        defer { close(fd) }
        try reader.readContents { chunk in
            guard let base = chunk.baseAddress else { return }
            var offset = 0
            while offset < chunk.count {
                let n = write(fd, base + offset, chunk.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw StasisError(.ioFailure, "cannot write \(root.path)/\(entry.path)", cause: Errno())
                }
                offset += n
            }
        }
        // chown before chmod: chown clears setuid and setgid bits.
        try check(fchown(fd, entry.uid, entry.gid), "set the owner of", entry.path)
        try check(fchmod(fd, mode_t(entry.mode)), "set the mode of", entry.path)
        for (key, value) in entry.xattrs.sorted(by: { $0.key < $1.key }) {
            try setXattr(fd, key, value, path: entry.path)
        }
        var times = [timespec(tv_sec: Int(entry.mtime), tv_nsec: 0), timespec(tv_sec: Int(entry.mtime), tv_nsec: 0)]
        try check(futimens(fd, &times), "set the mtime of", entry.path)
    }

    private func setOwnerAndTime(_ parentFD: Int32, _ name: String, _ entry: TarEntry, mode: UInt32?) throws {
        try check(fchownat(parentFD, name, entry.uid, entry.gid, AT_SYMLINK_NOFOLLOW), "set the owner of", entry.path)
        if let mode {
            // The node was just created by us and is not a symlink, so following is moot here.
            try check(fchmodat(parentFD, name, mode_t(mode), 0), "set the mode of", entry.path)
        }
        var times = [timespec(tv_sec: Int(entry.mtime), tv_nsec: 0), timespec(tv_sec: Int(entry.mtime), tv_nsec: 0)]
        try check(utimensat(parentFD, name, &times, AT_SYMLINK_NOFOLLOW), "set the mtime of", entry.path)
    }

    // MARK: - Whiteouts

    private func applyWhiteout(name: String, parentParts: [String], refuse: (String) -> StasisError) throws {
        let parentKey = parentParts.joined(separator: "/")
        if name == ".wh..wh..opq" {
            // A fresh descriptor: removing children below drops the cached one.
            let fd = try openFolder(parentParts, create: true, refuse: refuse)
            defer { if fd != rootFD { close(fd) } }
            try makeOpaque(fd, key: parentKey)
            return
        }
        // Other ".wh..wh.*" names are aufs bookkeeping, not whiteouts.
        guard !name.hasPrefix(".wh..wh.") else { return }
        let target = String(name.dropFirst(4))
        guard !target.isEmpty, target != ".", target != ".." else { throw refuse("it is a whiteout of '\(target)'") }
        let key = parentKey.isEmpty ? target : parentKey + "/" + target
        // A whiteout hides lower layers only; this layer's own entries stay.
        guard !touched.contains(key) else { return }
        // Nothing to hide if the folder is missing; a symlink on the way is never followed.
        guard let fd = openExistingFolder(parentParts) else { return }
        defer { if fd != rootFD { close(fd) } }
        if lstatAt(fd, target) != nil { try removeEntry(fd, target, key: key) }
        folderMetadata = folderMetadata.filter { $0.key != key && !$0.key.hasPrefix(key + "/") }
    }

    /// Removes lower-layer content under a folder, keeping what this layer wrote.
    private func makeOpaque(_ fd: Int32, key: String) throws {
        for child in try Self.children(fd) {
            let childKey = key.isEmpty ? child.string : key + "/" + child.string
            let keep = touched.contains(childKey) || touchedAncestors.contains(childKey)
            if keep, let st = lstatAt(fd, child.string), st.st_mode & S_IFMT == S_IFDIR {
                let sub = openat(fd, child.string, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw StasisError(.ioFailure, "cannot open \(root.path)/\(childKey)", cause: Errno()) }
                defer { close(sub) }
                try makeOpaque(sub, key: childKey)
            } else if !keep {
                if let cachedParent, cachedParent.path == childKey || cachedParent.path.hasPrefix(childKey + "/") {
                    dropCachedParent()
                }
                try Self.removeTree(child.bytes, in: fd, device: nil)
            }
        }
    }

    private func markTouched(_ key: String) {
        touched.insert(key)
        var path = Substring(key)
        while let slash = path.lastIndex(of: "/") {
            path = path[..<slash]
            touchedAncestors.insert(String(path))
        }
    }

    // MARK: - Folder metadata

    private func applyFolderMetadata() throws {
        for (key, entry) in folderMetadata {
            let parts = key.isEmpty ? [] : key.split(separator: "/").map(String.init)
            // A later entry of this layer may have replaced the folder: then its metadata is moot.
            guard let fd = openExistingFolder(parts) else { continue }
            defer { if fd != rootFD { close(fd) } }
            try check(fchown(fd, entry.uid, entry.gid), "set the owner of", entry.path)
            try check(fchmod(fd, mode_t(entry.mode)), "set the mode of", entry.path)
            for (name, value) in entry.xattrs.sorted(by: { $0.key < $1.key }) {
                try setXattr(fd, name, value, path: entry.path)
            }
            var times = [timespec(tv_sec: Int(entry.mtime), tv_nsec: 0), timespec(tv_sec: Int(entry.mtime), tv_nsec: 0)]
            try check(futimens(fd, &times), "set the mtime of", entry.path)
        }
        folderMetadata = [:]
    }

    // MARK: - Paths

    /// Splits an archive path into components: leading "./" and empty parts go, absolute paths and
    /// ".." are refused.
    private func components(_ path: String, refuse: (String) -> StasisError) throws -> [String] {
        guard !path.hasPrefix("/") else { throw refuse("its path is absolute") }
        var parts: [String] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            guard part != ".." else { throw refuse("its path contains '..'") }
            parts.append(String(part))
        }
        // Bounds the recursion (and open descriptors) of later tree walks; no real root filesystem comes close.
        guard path.utf8.count < 4096, parts.count <= 256 else { throw refuse("its path is deeper or longer than a root filesystem allows") }
        return parts
    }

    /// The parent folder of an entry, created if missing; cached across entries.
    private func parentFolder(_ parts: [String], refuse: (String) -> StasisError) throws -> Int32 {
        if parts.isEmpty { return rootFD }
        let key = parts.joined(separator: "/")
        if let cachedParent, cachedParent.path == key { return cachedParent.fd }
        let fd = try openFolder(parts, create: true, refuse: refuse)
        dropCachedParent()
        cachedParent = (key, fd)
        return fd
    }

    /// Opens `parts` under the root one component at a time with O_NOFOLLOW; a symlink anywhere on
    /// the way is refused. Missing folders are created (mode 0755) or reported as `.notFound`.
    private func openFolder(_ parts: [String], create: Bool, refuse: (String) -> StasisError) throws -> Int32 {
        var current = rootFD
        var walked: [String] = []
        for part in parts {
            walked.append(part)
            var next = openat(current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 {
                let err = Errno()
                if let st = lstatAt(current, part) {
                    if current != rootFD { close(current) }
                    let shown = walked.joined(separator: "/")
                    if st.st_mode & S_IFMT == S_IFLNK {
                        throw refuse("'\(shown)' on its path is a symlink (extraction never follows symlinks)")
                    }
                    throw refuse("'\(shown)' on its path is not a folder")
                }
                guard create else {
                    if current != rootFD { close(current) }
                    throw StasisError(.notFound, "\(walked.joined(separator: "/")) does not exist", cause: err)
                }
                if mkdirat(current, part, 0o755) != 0 || fchmodat(current, part, 0o755, 0) != 0 {
                    let err = Errno()
                    if current != rootFD { close(current) }
                    throw StasisError(.ioFailure, "cannot create folder \(root.path)/\(walked.joined(separator: "/"))", cause: err)
                }
                markTouched(walked.joined(separator: "/"))
                next = openat(current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard next >= 0 else {
                    let err = Errno()
                    if current != rootFD { close(current) }
                    throw StasisError(.ioFailure, "cannot open \(root.path)/\(walked.joined(separator: "/"))", cause: err)
                }
            }
            if current != rootFD { close(current) }
            current = next
        }
        return current
    }

    /// Opens an existing folder under the root without following symlinks; nil if that fails.
    private func openExistingFolder(_ parts: [String]) -> Int32? {
        var current = rootFD
        for part in parts {
            let next = openat(current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if current != rootFD { close(current) }
            guard next >= 0 else { return nil }
            current = next
        }
        return current
    }

    private func dropCachedParent() {
        if let cachedParent { close(cachedParent.fd) }
        cachedParent = nil
    }

    /// Removes `name` (whose root-relative path is `key`) from the folder `parentFD`.
    private func removeEntry(_ parentFD: Int32, _ name: String, key: String) throws {
        // The cached folder may be inside what goes.
        if let cachedParent, cachedParent.path == key || cachedParent.path.hasPrefix(key + "/") {
            dropCachedParent()
        }
        try Self.removeTree(Array(name.utf8CString), in: parentFD, device: nil)
    }

    private func lstatAt(_ fd: Int32, _ name: String) -> stat? {
        var st = stat()
        return fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st : nil
    }

    private func check(_ result: Int32, _ what: String, _ path: String) throws {
        guard result == 0 else { throw StasisError(.ioFailure, "cannot \(what) \(root.path)/\(path)", cause: Errno()) }
    }

    // MARK: - xattrs

    private typealias FSetXattr = @convention(c) (Int32, UnsafePointer<CChar>, UnsafeRawPointer?, Int, Int32) -> Int32
    /// Glibc's Swift overlay does not import <sys/xattr.h>; the libc symbol is looked up once instead.
    private static let fsetxattrFunction: FSetXattr? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "fsetxattr") else { return nil }
        return unsafeBitCast(symbol, to: FSetXattr.self)
    }()

    private func setXattr(_ fd: Int32, _ name: String, _ value: [UInt8], path: String) throws {
        guard let fsetxattr = Self.fsetxattrFunction else {
            throw StasisError(.unsupported, "cannot set extended attributes on \(path): fsetxattr is unavailable")
        }
        let result = value.withUnsafeBytes { fsetxattr(fd, name, $0.baseAddress, $0.count, 0) }
        try check(result, "set extended attribute \(name) on", path)
    }

    // MARK: - Helpers shared with the store

    static func makeDevice(_ major: UInt32, _ minor: UInt32) -> dev_t {
        // glibc's makedev(), which Swift does not import.
        let ma = UInt64(major), mi = UInt64(minor)
        return dev_t(((ma & 0xffff_f000) << 32) | ((ma & 0x0000_0fff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0x0000_00ff))
    }

    /// A folder entry's name, as bytes (for unlink) and as text (for keys).
    struct Child {
        var bytes: [CChar]
        var string: String
    }

    /// The names in the folder open at `fd`, without "." and "..".
    static func children(_ fd: Int32) throws -> [Child] {
        let dupFD = dup(fd)
        guard dupFD >= 0, let dir = fdopendir(dupFD) else {
            throw StasisError(.ioFailure, "cannot list a folder", cause: Errno())
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var out: [Child] = []
        while let entry = readdir(dir) {
            let bytes = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                Array(raw.bindMemory(to: CChar.self).prefix { $0 != 0 }) + [0]
            }
            let string = String(decoding: bytes.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if string == "." || string == ".." { continue }
            out.append(Child(bytes: bytes, string: string))
        }
        return out
    }

    /// Removes `name` (NUL-terminated) in the folder `parentFD`, recursively, never following
    /// symlinks and never descending into another filesystem (a stray mount must not be emptied).
    static func removeTree(_ name: [CChar], in parentFD: Int32, device: dev_t?) throws {
        let shown = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var st = stat()
        guard fstatat(parentFD, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
            if errno == ENOENT { return }
            throw StasisError(.ioFailure, "cannot inspect \(shown) to remove it", cause: Errno())
        }
        if st.st_mode & S_IFMT == S_IFDIR {
            if let device, st.st_dev != device {
                throw StasisError(.ioFailure, "refusing to remove \(shown): it is on another filesystem (a mount point?)")
            }
            let fd = openat(parentFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open \(shown) to remove it", cause: Errno()) }
            defer { close(fd) }
            for child in try children(fd) {
                try removeTree(child.bytes, in: fd, device: st.st_dev)
            }
            guard unlinkat(parentFD, name, AT_REMOVEDIR) == 0 else {
                throw StasisError(.ioFailure, "cannot remove folder \(shown)", cause: Errno())
            }
        } else {
            guard unlinkat(parentFD, name, 0) == 0 || errno == ENOENT else {
                throw StasisError(.ioFailure, "cannot remove \(shown)", cause: Errno())
            }
        }
    }

    /// Removes a file or folder tree at `url`, if present, without following symlinks or crossing mounts.
    static func removeTree(at url: URL) throws {
        let parent = open(url.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard parent >= 0 else {
            if errno == ENOENT { return }
            throw StasisError(.ioFailure, "cannot open \(url.deletingLastPathComponent().path)", cause: Errno())
        }
        defer { close(parent) }
        try removeTree(Array(url.lastPathComponent.utf8CString), in: parent, device: nil)
    }
}
