import Foundation
import StasisCore

extension ImageStore {
    /// Imports a root filesystem as image `name` from a folder or a tar archive (plain, gzip, zstd or
    /// xz), an OCI image layout (folder or tar) or a `docker save` tarball, recognised by content.
    public func importRootfs(name: String, from source: URL, progress: @Sendable (String) -> Void) async throws -> ImageRecord {
        try reserve(name)
        defer { release(name) }
        return try await Self.makeImage(home: home, name: name, work: .importing(source), progress: progress)
    }

    /// What fills the staging folder before the disk is made.
    enum Work: Sendable {
        case importing(URL)
        case debian(suite: String, packages: [String])
    }

    /// The whole build of one image, off the actor: stage a root, make the disk, rename into place.
    @concurrent
    static func makeImage(home: StasisHome, name: String, work: Work, progress: @Sendable (String) -> Void) async throws -> ImageRecord {
        try home.prepare()
        let staging = home.tmp.appendingPathComponent("image-\(name)-\(randomSuffix())", isDirectory: true)
        try createFolder(staging)
        do {
            let (label, root) = switch work {
            case .importing(let source): try await stageImport(source, staging: staging, progress: progress)
            case .debian(let suite, let packages): try await stageDebian(suite: suite, packages: packages, staging: staging, progress: progress)
            }
            let record = try await finishImage(home: home, name: name, label: label, root: root, staging: staging, progress: progress)
            try? RootfsExtractor.removeTree(at: staging)
            return record
        } catch {
            // Errors and cancellation alike: nothing half-made stays behind.
            try? RootfsExtractor.removeTree(at: staging)
            throw error
        }
    }

    // MARK: - Staging a root filesystem

    /// Fills `staging/root` from `source` (or, for a plain folder, uses the folder itself) and
    /// returns the image's source label and the folder mkfs should read.
    static func stageImport(_ source: URL, staging: URL, progress: @Sendable (String) -> Void) async throws -> (String, URL) {
        let source = source.standardizedFileURL
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source.path, isDirectory: &isFolder) else {
            throw StasisError(.notFound, "cannot import \(source.path): no such file or folder")
        }
        let root = staging.appendingPathComponent("root", isDirectory: true)
        if isFolder.boolValue {
            if isOCILayout(source) {
                progress("reading OCI image layout \(source.path)")
                try createFolder(root)
                try await applyOCILayout(source, label: source.path, into: root, progress: progress)
                return ("oci:\(source.path)", root)
            }
            if isDockerArchive(source) {
                progress("reading docker save folder \(source.path)")
                try createFolder(root)
                try await applyDockerArchive(source, label: source.path, into: root, progress: progress)
                return ("docker-save:\(source.path)", root)
            }
            // mkfs.ext4 -d reads the folder directly: no copy, and it never follows symlinks.
            progress("using root filesystem folder \(source.path)")
            return ("dir:\(source.path)", source)
        }
        progress("inspecting \(source.path)")
        switch try classifyArchive(source) {
        case .rootfs:
            try createFolder(root)
            try extractRootfsArchive(source, into: root, progress: progress)
            return ("tar:\(source.path)", root)
        case .oci:
            let unpacked = try unpackArchive(source, staging: staging, progress: progress)
            try createFolder(root)
            try await applyOCILayout(unpacked, label: source.path, into: root, progress: progress)
            return ("oci:\(source.path)", root)
        case .dockerSave:
            let unpacked = try unpackArchive(source, staging: staging, progress: progress)
            try createFolder(root)
            try await applyDockerArchive(unpacked, label: source.path, into: root, progress: progress)
            return ("docker-save:\(source.path)", root)
        }
    }

    /// Extracts a plain root filesystem tarball into `root` (no whiteouts: it is not a layer).
    static func extractRootfsArchive(_ archive: URL, into root: URL, progress: @Sendable (String) -> Void) throws {
        progress("extracting \(archive.lastPathComponent) (\(formatBytes(fileSize(archive))))")
        let extractor = try RootfsExtractor(root: root)
        try withArchive(archive, label: archive.path) { reader in
            try extractor.extract(reader, label: archive.path, whiteouts: false)
        }
    }

    /// Unpacks an OCI or docker-save tarball into `staging/source`, with the same safety checks.
    private static func unpackArchive(_ archive: URL, staging: URL, progress: @Sendable (String) -> Void) throws -> URL {
        progress("unpacking \(archive.lastPathComponent)")
        let folder = staging.appendingPathComponent("source", isDirectory: true)
        try createFolder(folder)
        let extractor = try RootfsExtractor(root: folder)
        try withArchive(archive, label: archive.path) { reader in
            try extractor.extract(reader, label: archive.path, whiteouts: false)
        }
        return folder
    }

    // MARK: - Making the disk

    /// Makes `staging/image/rootfs.ext4` from `root` with mkfs.ext4 -d, writes image.json, and
    /// renames the folder to `home.images/<name>`.
    static func finishImage(home: StasisHome, name: String, label: String, root: URL, staging: URL, progress: @Sendable (String) -> Void) async throws -> ImageRecord {
        try Task.checkCancellation()
        let usage = try measure(root)
        guard usage.entries > 1 else {
            throw StasisError(.invalidArgument, "\(label) holds no files: is it a root filesystem?")
        }
        let size = diskSize(forFootprint: usage.footprint)
        progress("making ext4 disk: \(formatBytes(size)) for \(formatBytes(usage.contentBytes)) of files")
        let folder = staging.appendingPathComponent("image", isDirectory: true)
        try createFolder(folder)
        let disk = folder.appendingPathComponent(ImageRecord.diskFileName)
        let fd = open(disk.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot create \(disk.path)", cause: Errno()) }
        // Sparse: the user's disk pays only for the blocks mkfs writes.
        let truncated = ftruncate(fd, off_t(size))
        let truncateError = Errno()
        close(fd)
        guard truncated == 0 else { throw StasisError(.ioFailure, "cannot size \(disk.path)", cause: truncateError) }

        var arguments = ["-q", "-F", "-L", String(name.prefix(16)), "-d", root.path, "-E", "root_owner=0:0"]
        // mke2fs gives one inode per 16 KiB; a tree of many small files needs more.
        let wantedInodes = usage.entries + usage.entries / 4 + 1024
        if wantedInodes > size / 16384 { arguments += ["-N", String(wantedInodes)] }
        arguments.append(disk.path)
        try await HostTool.run(HostTool.which("mkfs.ext4") ?? "mkfs.ext4", arguments)
        try AtomicFile.syncFile(disk)

        let record = ImageRecord(name: name, source: label, diskBytes: size, contentBytes: usage.contentBytes)
        try AtomicFile.writeJSON(record, to: folder.appendingPathComponent(ImageRecord.metadataFileName))
        try Task.checkCancellation()
        try createFolder(home.images)
        let destination = record.folderURL(in: home)
        guard !FileManager.default.fileExists(atPath: destination.path) else {
            throw StasisError(.alreadyExists, "an image named '\(name)' appeared while this one was being made")
        }
        try AtomicFile.rename(folder, over: destination)
        progress("image '\(name)' ready")
        return record
    }

    /// `max(content × 1.5, content + 1 GiB)` rounded up to 1 MiB.
    static func diskSize(forFootprint footprint: UInt64) -> UInt64 {
        let wanted = max(footprint + footprint / 2, footprint + (1 << 30))
        let mib: UInt64 = 1 << 20
        return (wanted + mib - 1) / mib * mib
    }

    /// What a root filesystem holds: file bytes, an estimate of the blocks it needs, and inodes.
    struct Usage {
        var contentBytes: UInt64 = 0
        var footprint: UInt64 = 0
        var entries: UInt64 = 0
    }

    /// Walks `root` without following symlinks; hard-linked files count once.
    static func measure(_ root: URL) throws -> Usage {
        let fd = open(root.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open \(root.path)", cause: Errno()) }
        defer { close(fd) }
        var usage = Usage()
        var seen: Set<[UInt64]> = []
        try measure(fd, path: root.path, usage: &usage, seen: &seen)
        return usage
    }

    private static func measure(_ dirFD: Int32, path: String, usage: inout Usage, seen: inout Set<[UInt64]>) throws {
        let block: UInt64 = 4096
        usage.entries += 1
        usage.footprint += block
        for child in try RootfsExtractor.children(dirFD) {
            var st = stat()
            guard fstatat(dirFD, child.bytes, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw StasisError(.ioFailure, "cannot inspect \(path)/\(child.string)", cause: Errno())
            }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                let sub = openat(dirFD, child.bytes, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw StasisError(.ioFailure, "cannot open \(path)/\(child.string)", cause: Errno()) }
                defer { close(sub) }
                try measure(sub, path: "\(path)/\(child.string)", usage: &usage, seen: &seen)
            case S_IFREG:
                if st.st_nlink > 1, !seen.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted { continue }
                usage.entries += 1
                usage.contentBytes += UInt64(st.st_size)
                usage.footprint += (UInt64(st.st_size) + block - 1) / block * block
            case S_IFLNK:
                usage.entries += 1
                // ext4 keeps targets under 60 bytes in the inode; longer ones take a block.
                if st.st_size >= 60 { usage.footprint += block }
            default:
                usage.entries += 1
            }
        }
    }

    // MARK: - Archives

    /// What a tar archive holds, judged by its members, not its file name.
    enum ArchiveLayout { case rootfs, oci, dockerSave }

    /// Reads member names only (seeking past data where it can) to tell the three kinds apart.
    static func classifyArchive(_ archive: URL) throws -> ArchiveLayout {
        let stream = try ArchiveStream(archive)
        defer { stream.abort() }
        let reader = TarReader(fileHandle: stream.handle, label: archive.path)
        var top: Set<String> = []
        var hasBlobs = false
        var hasLayerTar = false
        // Image archives never hold these at the top; seeing one ends the scan early.
        let rootfsMarkers: Set<String> = ["bin", "etc", "usr", "lib", "sbin", "var", "dev", "proc"]
        while let entry = try reader.next() {
            let parts = entry.path.split(separator: "/").filter { $0 != "." }
            guard let first = parts.first else { continue }
            if rootfsMarkers.contains(String(first)) { return .rootfs }
            if parts.count == 1 { top.insert(String(first)) }
            if first == "blobs" { hasBlobs = true }
            if parts.count == 2, parts[1] == "layer.tar" { hasLayerTar = true }
        }
        if top.contains("oci-layout"), top.contains("index.json"), hasBlobs { return .oci }
        if top.contains("manifest.json"), hasBlobs || hasLayerTar { return .dockerSave }
        return .rootfs
    }

    /// Runs `body` on a tar reader over `archive`, decompressing through a pipe if needed; checks
    /// that the decompressor succeeded.
    static func withArchive<T>(_ archive: URL, label: String, _ body: (TarReader) throws -> T) throws -> T {
        let stream = try ArchiveStream(archive)
        do {
            let result = try body(TarReader(fileHandle: stream.handle, label: label))
            try stream.finish()
            return result
        } catch {
            stream.abort()
            throw error
        }
    }

    // MARK: - OCI image layouts

    static func isOCILayout(_ folder: URL) -> Bool {
        FileManager.default.fileExists(atPath: folder.appendingPathComponent("oci-layout").path)
            && FileManager.default.fileExists(atPath: folder.appendingPathComponent("index.json").path)
    }

    /// Follows index.json to one linux/amd64 manifest and applies its layers in order, each verified.
    static func applyOCILayout(_ layout: URL, label: String, into root: URL, progress: @Sendable (String) -> Void) async throws {
        let layoutFile = try resolveInside(layout, "oci-layout", label: label)
        let version = try decodeJSON(OCILayoutFile.self, from: Data(contentsOf: layoutFile), what: "oci-layout of \(label)")
        guard version.imageLayoutVersion.hasPrefix("1.") else {
            throw StasisError(.unsupported, "\(label): OCI image layout version \(version.imageLayoutVersion) is not supported (1.x is)")
        }
        let index = try decodeJSON(OCIIndex.self, from: Data(contentsOf: resolveInside(layout, "index.json", label: label)), what: "index.json of \(label)")
        let manifest = try await resolveManifest(index.manifests, layout: layout, label: label, depth: 0)
        var layers: [(URL, String)] = []
        for descriptor in manifest.layers {
            if let type = descriptor.mediaType, type.contains("encrypted") {
                throw StasisError(.unsupported, "\(label): layer \(descriptor.digest) is encrypted (\(type))")
            }
            layers.append((try await verifiedBlob(descriptor, layout: layout, label: label), descriptor.digest))
        }
        try applyLayers(layers, into: root, label: label, progress: progress)
    }

    private static func resolveManifest(_ descriptors: [OCIDescriptor], layout: URL, label: String, depth: Int) async throws -> OCIManifest {
        guard depth < 8 else { throw StasisError(.corrupted, "\(label): image indexes nest more than 8 deep") }
        let descriptor = try chooseManifest(descriptors, label: label)
        let data = try Data(contentsOf: try await verifiedBlob(descriptor, layout: layout, label: label))
        let probe = try decodeJSON(OCIProbe.self, from: data, what: "blob \(descriptor.digest) of \(label)")
        let type = descriptor.mediaType ?? probe.mediaType ?? ""
        if type.hasSuffix("image.index.v1+json") || type.hasSuffix("manifest.list.v2+json") || (type.isEmpty && probe.manifests != nil) {
            let index = try decodeJSON(OCIIndex.self, from: data, what: "index \(descriptor.digest) of \(label)")
            return try await resolveManifest(index.manifests, layout: layout, label: label, depth: depth + 1)
        }
        return try decodeJSON(OCIManifest.self, from: data, what: "manifest \(descriptor.digest) of \(label)")
    }

    /// One manifest out of an index: the only one, or the linux/amd64 one (attestations ignored).
    private static func chooseManifest(_ descriptors: [OCIDescriptor], label: String) throws -> OCIDescriptor {
        let images = descriptors.filter { descriptor in
            descriptor.annotations?["vnd.docker.reference.type"] != "attestation-manifest"
                && descriptor.platform?.os != "unknown"
        }
        if images.count == 1, let only = images.first { return only }
        if let amd64 = images.first(where: { $0.platform?.os == "linux" && $0.platform?.architecture == "amd64" }) {
            return amd64
        }
        guard !images.isEmpty else { throw StasisError(.notFound, "\(label): the image index lists no image") }
        let platforms = images.map { d in d.platform.map { "\($0.os)/\($0.architecture)" } ?? "unknown platform" }
        throw StasisError(.notFound, "\(label): no linux/amd64 image among \(images.count) (\(platforms.joined(separator: ", ")))")
    }

    /// The file of a blob, after checking its size and SHA-256 against the descriptor.
    private static func verifiedBlob(_ descriptor: OCIDescriptor, layout: URL, label: String) async throws -> URL {
        let parts = descriptor.digest.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, parts[0] == "sha256" else {
            throw StasisError(.unsupported, "\(label): digest '\(descriptor.digest)' is not sha256")
        }
        // A well-formed hex digest is also what keeps the blob path inside the layout.
        guard parts[1].count == 64, parts[1].utf8.allSatisfy({ (48 ... 57).contains($0) || (97 ... 102).contains($0) }) else {
            throw StasisError(.corrupted, "\(label): digest '\(descriptor.digest)' is malformed")
        }
        let blob = try resolveInside(layout, "blobs/sha256/\(parts[1])", label: label)
        if let size = descriptor.size, fileSize(blob) != UInt64(clamping: size) {
            throw StasisError(.corrupted, "\(label): blob \(descriptor.digest) is \(fileSize(blob)) bytes, its descriptor says \(size)")
        }
        let actual = try await sha256(of: blob)
        guard actual == parts[1] else {
            throw StasisError(.corrupted, "\(label): blob \(descriptor.digest) does not match its digest (its content hashes to sha256:\(actual))")
        }
        return blob
    }

    // MARK: - docker save

    static func isDockerArchive(_ folder: URL) -> Bool {
        guard let data = try? Data(contentsOf: folder.appendingPathComponent("manifest.json")),
              let entries = try? JSONDecoder().decode([DockerManifestEntry].self, from: data)
        else { return false }
        return entries.contains { !$0.layers.isEmpty }
    }

    /// Applies the layers listed in manifest.json, each checked against the config's diff_ids (or
    /// its blob name).
    static func applyDockerArchive(_ folder: URL, label: String, into root: URL, progress: @Sendable (String) -> Void) async throws {
        let entries = try decodeJSON([DockerManifestEntry].self, from: Data(contentsOf: resolveInside(folder, "manifest.json", label: label)), what: "manifest.json of \(label)")
        guard entries.count == 1, let entry = entries.first else {
            let tags = entries.flatMap { $0.repoTags ?? [] }
            throw StasisError(.invalidArgument, "\(label) holds \(entries.count) images (\(tags.joined(separator: ", "))): save one image per archive")
        }
        let config = try decodeJSON(DockerConfig.self, from: Data(contentsOf: resolveInside(folder, entry.config, label: label)), what: "config of \(label)")
        let diffIDs = config.rootfs?.diffIDs ?? []
        var layers: [(URL, String)] = []
        for (i, path) in entry.layers.enumerated() {
            let file = try resolveInside(folder, path, label: label)
            let actual = try await sha256(of: file)
            var expected: [String] = []
            let pathParts = path.split(separator: "/")
            if pathParts.count == 3, pathParts[0] == "blobs", pathParts[1] == "sha256" { expected.append(String(pathParts[2])) }
            if diffIDs.count == entry.layers.count { expected.append(diffIDs[i].replacingOccurrences(of: "sha256:", with: "")) }
            guard !expected.isEmpty else {
                throw StasisError(.corrupted, "\(label): cannot verify layer \(path): the config lists no diff_ids for it")
            }
            guard expected.contains(actual) else {
                throw StasisError(.corrupted, "\(label): layer \(path) does not match its digest (it hashes to sha256:\(actual))")
            }
            layers.append((file, "sha256:\(actual)"))
        }
        try applyLayers(layers, into: root, label: label, progress: progress)
    }

    // MARK: - Layers

    /// Applies layer tarballs in order, with whiteouts.
    private static func applyLayers(_ layers: [(file: URL, digest: String)], into root: URL, label: String, progress: @Sendable (String) -> Void) throws {
        let extractor = try RootfsExtractor(root: root)
        for (i, layer) in layers.enumerated() {
            try Task.checkCancellation()
            progress("layer \(i + 1)/\(layers.count) \(layer.digest.prefix(19)) (\(formatBytes(fileSize(layer.file))))")
            let layerLabel = "\(label) layer \(i + 1) (\(layer.digest.prefix(19)))"
            try withArchive(layer.file, label: layerLabel) { reader in
                try extractor.extract(reader, label: layerLabel, whiteouts: true)
            }
        }
    }

    // MARK: - Helpers

    /// `relative` inside `base`, with symlinks resolved; refused if it leaves `base` or is not a file.
    static func resolveInside(_ base: URL, _ relative: String, label: String) throws -> URL {
        guard !relative.hasPrefix("/"), !relative.split(separator: "/").contains("..") else {
            throw StasisError(.invalidArgument, "\(label): '\(relative)' refused because it points outside the archive")
        }
        let realBase = try realPath(base.path, label: label)
        let candidate = base.appendingPathComponent(relative).path
        guard FileManager.default.fileExists(atPath: candidate) else {
            throw StasisError(.corrupted, "\(label): '\(relative)' is missing")
        }
        let real = try realPath(candidate, label: label)
        guard real.hasPrefix(realBase + "/") else {
            throw StasisError(.invalidArgument, "\(label): '\(relative)' refused because it resolves outside the archive")
        }
        var st = stat()
        guard stat(real, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            throw StasisError(.corrupted, "\(label): '\(relative)' is not a regular file")
        }
        return URL(fileURLWithPath: real)
    }

    private static func realPath(_ path: String, label: String) throws -> String {
        guard let resolved = realpath(path, nil) else {
            throw StasisError(.ioFailure, "\(label): cannot resolve \(path)", cause: Errno())
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Hex SHA-256 of a file, by coreutils: native speed, even in debug builds, for layers of gigabytes.
    static func sha256(of file: URL) async throws -> String {
        let output = try await HostTool.run("sha256sum", ["-b", "--", file.path])
        var line = Substring(output.standardOutput)
        if line.hasPrefix("\\") { line = line.dropFirst() } // sha256sum escapes odd file names
        let hex = line.prefix(64)
        guard hex.count == 64 else { throw StasisError(.toolFailed, "sha256sum printed nothing usable for \(file.path)") }
        return String(hex)
    }

    private static func decodeJSON<T: Decodable>(_ type: T.Type, from data: Data, what: String) throws -> T {
        do { return try JSONDecoder().decode(type, from: data) } catch {
            throw StasisError(.corrupted, "\(what) is not valid", cause: error)
        }
    }

    static func createFolder(_ url: URL) throws {
        do { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755]) } catch {
            throw StasisError(.ioFailure, "cannot create folder \(url.path)", cause: error)
        }
    }

    static func fileSize(_ url: URL) -> UInt64 {
        var st = stat()
        return stat(url.path, &st) == 0 ? UInt64(st.st_size) : 0
    }

    /// "312.4 MB": decimal units, as disk tools print them.
    static func formatBytes(_ bytes: UInt64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1000, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }
}

// MARK: - Decompression

/// A tar archive's bytes: the file itself, or the output of `gzip -dc`, `zstd -dc` or `xz -dc` read
/// through a pipe, chosen by the file's first bytes.
final class ArchiveStream {
    /// Where the tar bytes come from.
    let handle: FileHandle
    private let file: FileHandle
    private let process: Process?
    private let tool: String
    private let path: String

    init(_ url: URL) throws {
        path = url.path
        do { file = try FileHandle(forReadingFrom: url) } catch {
            throw StasisError(.notFound, "cannot open \(url.path)", cause: error)
        }
        var magic = [UInt8](repeating: 0, count: 6)
        let n = read(file.fileDescriptor, &magic, magic.count)
        lseek(file.fileDescriptor, 0, SEEK_SET)
        let head = Array(magic.prefix(max(n, 0)))
        let arguments: [String]
        switch head {
        case _ where head.starts(with: [0x1f, 0x8b]): (tool, arguments) = ("gzip", ["-dc"])
        case _ where head.starts(with: [0x28, 0xb5, 0x2f, 0xfd]): (tool, arguments) = ("zstd", ["-dcq"])
        case _ where head.starts(with: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]): (tool, arguments) = ("xz", ["-dc"])
        case _ where head.starts(with: Array("BZh".utf8)):
            try? file.close()
            throw StasisError(.unsupported, "\(url.path) is bzip2-compressed, which is not supported: decompress it first or use gzip, zstd or xz")
        default:
            tool = ""
            process = nil
            handle = file
            return
        }
        guard let executable = HostTool.which(tool) else {
            try? file.close()
            throw StasisError(.missingDependency, "\(url.path) is \(tool)-compressed but \(tool) is not installed (apt-get install \(tool == "xz" ? "xz-utils" : tool))")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardInput = file
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch {
            try? file.close()
            throw StasisError(.missingDependency, "cannot start \(tool)", cause: error)
        }
        // Our copy of the write end must go, or the pipe never reports end of file.
        try? pipe.fileHandleForWriting.close()
        self.process = process
        handle = pipe.fileHandleForReading
    }

    /// Reads what the decompressor still has (tar padding), waits for it and checks its status.
    func finish() throws {
        defer { closeHandles() }
        guard let process else { return }
        var scratch = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(handle.fileDescriptor, &scratch, scratch.count)
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
        }
        process.waitUntilExit()
        // gzip exits 2 for a warning such as trailing zeros, which docker and tar both produce.
        let ok = process.terminationReason == .exit && (process.terminationStatus == 0 || (tool == "gzip" && process.terminationStatus == 2))
        guard ok else {
            throw StasisError(.corrupted, "\(tool) -dc \(path) failed (status \(process.terminationStatus)): is the file damaged or truncated?")
        }
    }

    /// Stops early: the decompressor is told to stop and reaped.
    func abort() {
        closeHandles()
        guard let process else { return }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    private var closed = false
    private func closeHandles() {
        guard !closed else { return }
        closed = true
        try? file.close()
        if process != nil { try? handle.close() }
    }
}

// MARK: - JSON shapes

struct OCILayoutFile: Decodable {
    var imageLayoutVersion: String
}

struct OCIPlatform: Decodable {
    var architecture: String
    var os: String
    var variant: String?
}

struct OCIDescriptor: Decodable {
    var mediaType: String?
    var digest: String
    var size: Int64?
    var platform: OCIPlatform?
    var annotations: [String: String]?
}

struct OCIIndex: Decodable {
    var manifests: [OCIDescriptor]
}

struct OCIManifest: Decodable {
    var layers: [OCIDescriptor]
}

/// Just enough of a blob to tell an index from a manifest when the descriptor does not say.
struct OCIProbe: Decodable {
    var mediaType: String?
    var manifests: [OCIDescriptor]?
}

struct DockerManifestEntry: Decodable {
    var config: String
    var repoTags: [String]?
    var layers: [String]

    enum CodingKeys: String, CodingKey {
        case config = "Config", repoTags = "RepoTags", layers = "Layers"
    }
}

struct DockerConfig: Decodable {
    struct RootFS: Decodable {
        var diffIDs: [String]?
        enum CodingKeys: String, CodingKey { case diffIDs = "diff_ids" }
    }

    var rootfs: RootFS?
}
