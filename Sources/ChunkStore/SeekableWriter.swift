import Foundation
import StasisCore

/// Writes a file in the zstd seekable format: independent zstd frames appended one by one, then
/// the seek table. The file is built beside its destination and renamed into place by `finish()`,
/// so a failed export leaves nothing behind under the final name.
public final class SeekableWriter {
    /// Where the file goes.
    public let url: URL
    /// Whether entries carry XXH64 checksums.
    public let hasChecksums: Bool

    private let temporary: String
    private var fd: Int32
    private var entries: [SeekTable.Entry] = []
    private var pending: [UInt8] = []
    private var finished = false

    /// Buffered bytes before a write: many small frames (4 KiB of zeros compresses to 13 bytes)
    /// must not cost a system call each.
    private static let bufferSize = 1 << 20

    /// Starts a seekable file at `url`; with `checksums`, every `append` must give one.
    public init(url: URL, checksums: Bool, mode: mode_t = 0o644) throws {
        self.url = url
        self.hasChecksums = checksums
        temporary = FileIO.temporaryPath(beside: url.path)
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot create \(temporary)", cause: Errno()) }
        pending.reserveCapacity(SeekableWriter.bufferSize)
    }

    deinit {
        if !finished {
            close(fd)
            unlink(temporary)
        }
    }

    /// The number of frames appended so far.
    public var frameCount: Int { entries.count }

    /// Appends one complete zstd frame whose header declares `decompressedSize` bytes; refuses
    /// anything else, since the table would then lie.
    public func append(frame: UnsafeRawBufferPointer, decompressedSize: Int, checksum: UInt32? = nil) throws {
        guard !finished else { throw StasisError(.invalidState, "\(url.path) is already finished") }
        guard (checksum != nil) == hasChecksums else {
            throw StasisError(.invalidArgument, hasChecksums ? "this seek table needs a checksum for every frame" : "this seek table has no checksums")
        }
        guard entries.count < SeekTable.maxFrames, frame.count <= Int(UInt32.max) else {
            throw StasisError(.invalidArgument, "the seekable format holds at most \(SeekTable.maxFrames) frames of at most 4 GiB")
        }
        try Zstd.checkHeader(frame, expectedSize: decompressedSize, maxSize: SeekTable.maxFrameContentSize)
        entries.append(SeekTable.Entry(compressedSize: frame.count, decompressedSize: decompressedSize, checksum: checksum))
        try buffer(frame)
    }

    /// Appends a frame held in an array; see `append(frame:decompressedSize:checksum:)`.
    public func append(frame: [UInt8], decompressedSize: Int, checksum: UInt32? = nil) throws {
        try frame.withUnsafeBytes { try append(frame: $0, decompressedSize: decompressedSize, checksum: checksum) }
    }

    /// Writes the seek table, fsyncs, and renames the file into place.
    public func finish() throws {
        guard !finished else { throw StasisError(.invalidState, "\(url.path) is already finished") }
        let table = try SeekTable(entries: entries, hasChecksums: hasChecksums)
        try table.encoded().withUnsafeBytes { try buffer($0) }
        try flush()
        guard fsync(fd) == 0 else { throw StasisError(.ioFailure, "cannot fsync \(temporary)", cause: Errno()) }
        finished = true
        close(fd)
        try AtomicFile.rename(URL(fileURLWithPath: temporary), over: url)
    }

    private func buffer(_ bytes: UnsafeRawBufferPointer) throws {
        if pending.count + bytes.count > SeekableWriter.bufferSize { try flush() }
        if bytes.count >= SeekableWriter.bufferSize {
            try FileIO.append(fd, bytes)
        } else {
            pending.append(contentsOf: bytes)
        }
    }

    private func flush() throws {
        try pending.withUnsafeBytes { try FileIO.append(fd, $0) }
        pending.removeAll(keepingCapacity: true)
    }
}
