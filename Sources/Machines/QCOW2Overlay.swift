import Foundation
import StasisCore

/// Writes an empty qcow2 overlay over a backing file, byte for byte what `qemu-img create -u -f
/// qcow2 -o cluster_size=4096 -b BACKING -F FORMAT FILE SIZE` writes (QEMU 7.2), without
/// starting `qemu-img`: every restore, run and turn snapshot makes one, and the process took
/// ~10 ms of a ~270 ms restore. Without `-u`, `qemu-img` also opened the whole backing chain
/// to learn the size, which grew with a session's disk layers.
///
/// Layout, one 4 KiB cluster each: the header (with the backing format extension and the
/// backing file name after it), the refcount table, one refcount block, then the L1 table,
/// all zeros (nothing allocated: every read goes to the backing file).
public enum QCOW2Overlay {
    /// The largest virtual size whose metadata one refcount block covers (~2 TiB); larger
    /// overlays are left to `qemu-img`.
    static var maxVirtualSize: Int { (refcountsPerBlock - 3) * (clusterSize / 8) * bytesPerL2Table }

    private static let clusterSize = DiskLayers.clusterSize
    private static let clusterBits = clusterSize.trailingZeroBitCount
    private static let refcountsPerBlock = clusterSize / 2  // refcount_order 4: 16 bits each
    private static let bytesPerL2Table = clusterSize / 8 * clusterSize  // what one L1 entry maps
    private static let headerLength = 112
    private static let backingFormatExtension: UInt32 = 0xE279_2ACA

    /// The bytes of an overlay of `virtualSize` bytes over `backing` (a path) in `format`.
    static func bytes(backing: String, format: String, virtualSize: Int) throws -> [UInt8] {
        guard virtualSize > 0, virtualSize <= maxVirtualSize else {
            throw StasisError(.invalidArgument, "a qcow2 overlay of \(virtualSize) bytes is outside 1...\(maxVirtualSize)")
        }
        let name = Array(backing.utf8)
        let formatName = Array(format.utf8)
        let paddedFormat = (formatName.count + 7) / 8 * 8
        let nameOffset = headerLength + 8 + paddedFormat + 8
        guard !name.isEmpty, !formatName.isEmpty, nameOffset + name.count <= clusterSize, !name.contains(0), !formatName.contains(0) else {
            throw StasisError(.invalidArgument, "backing file '\(backing)' (\(format)) does not fit a qcow2 header")
        }
        let l1Entries = (virtualSize + bytesPerL2Table - 1) / bytesPerL2Table
        let l1Clusters = (l1Entries * 8 + clusterSize - 1) / clusterSize
        let metadataClusters = 3 + l1Clusters
        var out = [UInt8](repeating: 0, count: 3 * clusterSize + l1Entries * 8)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.bigEndian) { out.replaceSubrange(offset ..< offset + $0.count, with: $0) }
        }
        put(UInt32(0x5146_49FB), at: 0)  // "QFI\xfb"
        put(UInt32(3), at: 4)  // version
        put(UInt64(nameOffset), at: 8)
        put(UInt32(name.count), at: 16)
        put(UInt32(clusterBits), at: 20)
        put(UInt64(virtualSize), at: 24)
        put(UInt32(l1Entries), at: 36)
        put(UInt64(3 * clusterSize), at: 40)  // L1 table
        put(UInt64(clusterSize), at: 48)  // refcount table
        put(UInt32(1), at: 56)  // refcount table clusters
        put(UInt32(4), at: 96)  // refcount_order
        put(UInt32(headerLength), at: 100)
        put(backingFormatExtension, at: headerLength)
        put(UInt32(formatName.count), at: headerLength + 4)
        out.replaceSubrange(headerLength + 8 ..< headerLength + 8 + formatName.count, with: formatName)
        // The end-of-extensions marker (type 0, length 0) is zeros already.
        out.replaceSubrange(nameOffset ..< nameOffset + name.count, with: name)
        put(UInt64(2 * clusterSize), at: clusterSize)  // the one refcount block
        for cluster in 0 ..< metadataClusters { put(UInt16(1), at: 2 * clusterSize + 2 * cluster) }
        return out
    }

    /// Creates `file` (which must not exist) as an empty overlay of `virtualSize` bytes (rounded
    /// up to 512, as `qemu-img` does) over `backing`: written directly when the size fits one
    /// refcount block, else by `qemu-img`. The file appears whole or not at all.
    static func create(_ file: URL, backing: String, format: String, virtualSize: Int) async throws {
        let size = (virtualSize + 511) / 512 * 512
        guard size <= maxVirtualSize else {
            try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2"] + DiskLayers.createOptions
                + ["-u", "-b", backing, "-F", format, file.path, "\(size)"])
            return
        }
        let bytes = try bytes(backing: backing, format: format, virtualSize: size)
        // Written beside it, then linked into place: a crash leaves no half overlay under its
        // name (a boot reuses an overlay it finds), and an existing file is never replaced.
        let staged = file.deletingLastPathComponent().appendingPathComponent(".\(file.lastPathComponent).\(UInt32.random(in: 0 ... .max))")
        let fd = open(staged.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot create disk overlay \(staged.path)", cause: Errno()) }
        defer { unlink(staged.path) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let error = Errno()
        close(fd)
        guard written == bytes.count else { throw StasisError(.ioFailure, "cannot write disk overlay \(staged.path)", cause: error) }
        guard link(staged.path, file.path) == 0 else {
            throw StasisError(.ioFailure, "cannot create disk overlay \(file.path)", cause: Errno())
        }
    }

    /// The virtual size a qcow2 file's header records.
    static func virtualSize(ofQCOW2 file: URL) throws -> Int {
        let handle: FileHandle
        do { handle = try FileHandle(forReadingFrom: file) } catch {
            throw StasisError(.ioFailure, "cannot read \(file.path)", cause: error)
        }
        defer { try? handle.close() }
        let header = Array((try? handle.read(upToCount: 32)) ?? Data())
        guard header.count == 32, header[0 ..< 4].elementsEqual([0x51, 0x46, 0x49, 0xFB]) else {
            throw StasisError(.corrupted, "\(file.path) is not a qcow2 file")
        }
        let size = header[24 ..< 32].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard size > 0, size <= UInt64(Int.max) else { throw StasisError(.corrupted, "\(file.path) records a virtual size of \(size) bytes") }
        return Int(size)
    }

    private static func fileSize(_ file: URL) throws -> Int {
        var info = stat()
        guard stat(file.path, &info) == 0 else { throw StasisError(.ioFailure, "cannot read \(file.path)", cause: Errno()) }
        return Int(info.st_size)
    }

    /// Creates `file` as an empty overlay over `backing`, as big as it is.
    public static func create(_ file: URL, over backing: URL, format: String) async throws {
        let size = try format == "qcow2" ? virtualSize(ofQCOW2: backing) : fileSize(backing)
        try await create(file, backing: backing.path, format: format, virtualSize: size)
    }
}
