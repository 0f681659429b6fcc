import Dispatch
import Foundation
import StasisCore
import Synchronization

/// A copy of a running machine's RAM file, taken while its guest is paused for a
/// `--leave-running` snapshot. The pause is what the guest feels, so the work is split: before
/// the pause, the file's data extents are found and memory for them is faulted in; inside it, the extents are read into that memory on every core,
/// with no page allocation and no file system writes; after it, the snapshot cuts its frames
/// straight from memory (`image`). The copy lies at the file's own offsets in an address range of
/// the file's size, so holes cost no memory (read there, it is zeros). The RAM file's holes are
/// never read: that would fill the page cache with zeros. Nothing is left on disk, whatever happens.
///
/// Unchecked Sendable: one snapshot owns it and uses it in sequence (made, copied, read).
final class PausedRAMCopy: @unchecked Sendable {
    private let source: URL
    private let descriptor: Int32
    private let size: Int
    private let buffer: UnsafeMutableRawPointer?
    private var extents: [Range<Int>] = []
    /// Left when the memory for the extents found at `init` is faulted in.
    private let populated = DispatchGroup()
    /// Set when the copy is dropped before the pause: the faulting thread stops early.
    private let abandoned = Flag()

    /// A flag shared with the faulting thread, which must not keep the copy alive.
    private final class Flag: Sendable {
        let raised = Atomic<Bool>(false)
    }

    /// Opens `source` and faults in memory for its data extents.
    init(source: URL) throws {
        self.source = source
        descriptor = open(source.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw StasisError(.ioFailure, "cannot open \(source.path)", cause: Errno()) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            let error = Errno()
            close(descriptor)
            throw StasisError(.ioFailure, "cannot stat \(source.path)", cause: error)
        }
        size = Int(info.st_size)
        let mapped = size > 0 ? mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) : nil
        guard size == 0 || (mapped != nil && mapped != MAP_FAILED) else {
            let error = Errno()
            close(descriptor)
            throw StasisError(.ioFailure, "cannot map \(size) bytes to copy \(source.path) into", cause: error)
        }
        buffer = mapped
        guard let buffer else { return }
        extents = try SparseFile.dataRanges(descriptor, size: size)
        // Faulted in on every core while the caller gets on with what comes before the pause.
        // (Huge pages were tried: their compaction made this several times slower.)
        let pieces = Self.pieces(of: extents)
        let base = UInt(bitPattern: buffer)
        populated.enter()
        Thread { [populated, abandoned] in
            Self.eachPiece(pieces) { piece in
                guard !abandoned.raised.load(ordering: .relaxed),
                      let start = UnsafeMutableRawPointer(bitPattern: base + UInt(piece.lowerBound)) else { return }
                Self.populate(start, piece.count)
            }
            populated.leave()
        }.start()
    }

    deinit {
        abandoned.raised.store(true, ordering: .relaxed)
        populated.wait()  // at most one 8 MiB piece per core
        if let buffer { munmap(buffer, size) }
        close(descriptor)
    }

    /// The copy and the ranges of it that hold data; valid while this object lives.
    var image: Machine.RAMImage? {
        buffer.map { Machine.RAMImage(bytes: UnsafeRawBufferPointer(start: $0, count: size), dataRanges: extents) }
    }

    /// Copies every data extent of the file. Call while the guest is paused.
    func copyWhilePaused() throws {
        guard let buffer else { return }
        populated.wait()
        // Extents the guest added since `init` are copied too, their pages faulted in as they go.
        extents = try SparseFile.dataRanges(descriptor, size: size)
        let failure = Mutex<Errno?>(nil)
        let fd = descriptor
        let base = UInt(bitPattern: buffer)
        Self.eachPiece(Self.pieces(of: extents)) { piece in
            var done = piece.lowerBound
            while done < piece.upperBound {
                guard let target = UnsafeMutableRawPointer(bitPattern: base + UInt(done)) else { return }
                let n = pread(fd, target, piece.upperBound - done, off_t(done))
                if n < 0, errno == EINTR { continue }
                guard n > 0 else {
                    // n == 0: the file shrank under a paused guest, which QEMU never does.
                    let error = n < 0 ? Errno() : Errno(EIO)
                    failure.withLock { $0 = $0 ?? error }
                    return
                }
                done += n
            }
        }
        if let error = failure.withLock({ $0 }) {
            throw StasisError(.ioFailure, "cannot copy \(source.path) while the guest is paused", cause: error)
        }
    }

    /// `extents` cut into pieces of at most 8 MiB, for the workers to share.
    private static func pieces(of extents: [Range<Int>]) -> [Range<Int>] {
        let pieceSize = 8 << 20
        return extents.flatMap { extent in
            stride(from: extent.lowerBound, to: extent.upperBound, by: pieceSize).map { $0 ..< min($0 + pieceSize, extent.upperBound) }
        }
    }

    /// Runs `body` on every piece, one worker per core.
    private static func eachPiece(_ pieces: [Range<Int>], _ body: @Sendable (Range<Int>) -> Void) {
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, pieces.count))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for index in stride(from: worker, to: pieces.count, by: workers) { body(pieces[index]) }
        }
    }

    private static let populateWrite: Int32 = 23  // MADV_POPULATE_WRITE (Linux 5.14); not in Glibc's headers yet

    /// Faults in `count` bytes at `start` now, so that the copy in the pause does not.
    private static func populate(_ start: UnsafeMutableRawPointer, _ count: Int) {
        if madvise(start, count, populateWrite) == 0 || errno != EINVAL { return }
        // A kernel older than 5.14: touch each page. (On ENOMEM it is left to fault in the pause.)
        for offset in stride(from: 0, to: count, by: 4096) { (start + offset).storeBytes(of: 0, as: UInt8.self) }
    }
}
