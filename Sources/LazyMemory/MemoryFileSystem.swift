import CFuse
import ChunkStore
import Dispatch
import Foundation
import StasisCore
import Synchronization

/// A FUSE file system with one file, `memory`: a snapshot's RAM, decompressed a frame at a time
/// the first time the kernel asks for it. QEMU maps the file privately (`share=off`), so a
/// restored guest starts before its RAM exists anywhere, its writes go to its own anonymous pages,
/// and the kernel's page cache keeps what was read for as long as the machine runs.
///
/// It serves one QEMU: once the file has been opened and every opener has closed it (QEMU quit,
/// or was killed), the loop ends and the file system is unmounted. FUSE's multi-threaded loop
/// serves it: the kernel reads 2-4 MiB around each fault in a guest's huge-page-advised RAM, in
/// several requests at once, so frames are decompressed on every core.
public final class MemoryFileSystem: Sendable {
    /// The served file's name in the mount.
    public static let fileName = "memory"

    private let file: ChunkedFile
    private let describe: @Sendable (Int) -> String
    private let log: @Sendable (String) -> Void
    private let state = Mutex(State())

    private struct State {
        /// The last frames decompressed, newest last: a request may cover part of a frame.
        var recent: [(index: Int, bytes: [UInt8])] = []
        var openFiles = 0
        var everOpened = false
        /// Set when the open timeout gave up: a late open is refused rather than cut off.
        var closing = false
        var framesRead = 0
    }

    /// Frames decompressed so far, zero frames included (a frame read again after eviction
    /// counts again).
    public var framesRead: Int { state.withLock { $0.framesRead } }

    /// Serves `file`; `describe(frame)` names a frame in errors ("frame 12 of snapshot …").
    public init(file: ChunkedFile, describe: @escaping @Sendable (Int) -> String, log: @escaping @Sendable (String) -> Void) {
        self.file = file
        self.describe = describe
        self.log = log
    }

    /// Mounts at `mountpoint` (an empty folder), calls `ready` once the file can be opened, and
    /// serves until the last opener closes it. If nothing opens it within `openTimeout`, or
    /// `ready` returns false (nobody to tell), it unmounts and returns.
    public func run(at mountpoint: URL, openTimeout: Duration, ready: () -> Bool) throws {
        let arguments = ["stasis-memfs", "-o", "fsname=stasis-memory,subtype=stasis,default_permissions"]
        var args = fuse_args(argc: 0, argv: nil, allocated: 0)
        for argument in arguments {
            guard fuse_opt_add_arg(&args, argument) == 0 else {
                throw StasisError(.internalError, "cannot build FUSE arguments")
            }
        }
        defer { fuse_opt_free_args(&args) }
        var operations = Self.operations()
        let server = Unmanaged.passUnretained(self).toOpaque()  // `run` holds self while FUSE uses it
        guard let fuse = stasis_fuse_new(&args, &operations, server) else {
            throw StasisError(.internalError, "cannot set up FUSE (libfuse3 refused its arguments)")
        }
        defer { fuse_destroy(fuse) }
        guard fuse_mount(fuse, mountpoint.path) == 0 else {
            throw StasisError(.ioFailure, "cannot mount a FUSE file system at \(mountpoint.path): is /dev/fuse there, and may this user mount?")
        }
        defer { fuse_unmount(fuse) }
        if let session = fuse_get_session(fuse) { _ = fuse_set_signal_handlers(session) }
        guard ready() else { return }
        // If nothing opens the file in time, the restore that started this failed first. The
        // watchdog ends the loop the way Ctrl-C would (libfuse's SIGTERM handler), never touching
        // `fuse` itself, and is joined before `fuse` is destroyed.
        let finished = DispatchSemaphore(value: 0)
        let watchdogDone = DispatchSemaphore(value: 0)
        let watchdog = Thread { [self] in
            defer { watchdogDone.signal() }
            guard finished.wait(timeout: .now() + .seconds(Int(openTimeout.components.seconds))) == .timedOut else { return }
            let giveUp = state.withLock { state in
                if !state.everOpened { state.closing = true }
                return state.closing
            }
            if giveUp {
                log("nothing opened \(Self.fileName) within \(openTimeout): unmounting")
                kill(getpid(), SIGTERM)
            }
        }
        watchdog.start()
        let status = stasis_fuse_loop_mt(fuse, UInt32(max(2, ProcessInfo.processInfo.activeProcessorCount)))
        finished.signal()
        watchdogDone.wait()
        if let session = fuse_get_session(fuse) { fuse_remove_signal_handlers(session) }
        if status < 0 { log("FUSE loop ended with error \(-status)") }
    }

    // MARK: Requests

    private func attributes(of path: String, _ st: UnsafeMutablePointer<stat>) -> Int32 {
        st.pointee = stat()
        switch path {
        case "/":
            st.pointee.st_mode = S_IFDIR | 0o755
            st.pointee.st_nlink = 2
        case "/" + Self.fileName:
            // Writable by its owner because QEMU opens a memory-backend-file read-write even when it
            // maps it privately; no write ever reaches here (no write handler).
            st.pointee.st_mode = S_IFREG | 0o600
            st.pointee.st_nlink = 1
            st.pointee.st_size = off_t(file.frames.totalSize)
            st.pointee.st_blocks = blkcnt_t((file.frames.totalSize + 511) / 512)
        default:
            return -ENOENT
        }
        st.pointee.st_uid = getuid()
        st.pointee.st_gid = getgid()
        return 0
    }

    private func open(_ path: String) -> Int32 {
        guard path == "/" + Self.fileName else { return -ENOENT }
        return state.withLock {
            guard !$0.closing else { return -ENOENT }
            $0.openFiles += 1
            $0.everOpened = true
            return 0
        }
    }

    /// Whether that was the last opener.
    private func release(_ path: String) -> Bool {
        state.withLock {
            $0.openFiles -= 1
            return $0.everOpened && $0.openFiles <= 0
        }
    }

    private func read(into buffer: UnsafeMutablePointer<CChar>, size: Int, offset: Int) -> Int32 {
        let total = file.frames.totalSize
        let frameSize = file.frames.frameSize
        var done = 0
        while done < size, offset + done < total {
            let position = offset + done
            let index = position / frameSize
            let within = position % frameSize
            let bytes: [UInt8]
            do { bytes = try frame(index) } catch {
                log("cannot serve \(describe(index)): \(error)")
                return -EIO
            }
            let count = min(size - done, bytes.count - within)
            guard count > 0 else { break }
            bytes.withUnsafeBytes { source in
                guard let start = source.baseAddress else { return }
                UnsafeMutableRawPointer(buffer + done).copyMemory(from: start + within, byteCount: count)
            }
            done += count
        }
        return Int32(done)
    }

    private func frame(_ index: Int) throws -> [UInt8] {
        if let hit = state.withLock({ state in state.recent.first { $0.index == index }?.bytes }) { return hit }
        let bytes = try file.readFrame(index, codec: try Self.threadCodec())
        state.withLock {
            $0.framesRead += 1
            $0.recent.append((index, bytes))
            if $0.recent.count > 8 { $0.recent.removeFirst() }
        }
        return bytes
    }

    /// This thread's zstd context, made on its first frame (libfuse may end idle threads and
    /// start new ones; a context goes with its thread).
    private static func threadCodec() throws -> Zstd {
        let key = "stasis.memfs.zstd"
        if let codec = Thread.current.threadDictionary[key] as? Zstd { return codec }
        let codec = try Zstd()
        Thread.current.threadDictionary[key] = codec
        return codec
    }

    // MARK: C entry points

    private static func server() -> MemoryFileSystem? {
        guard let context = fuse_get_context(), let data = context.pointee.private_data else { return nil }
        return Unmanaged<MemoryFileSystem>.fromOpaque(data).takeUnretainedValue()
    }

    private static func operations() -> fuse_operations {
        var operations = fuse_operations()
        operations.`init` = { _, config in
            // The file never changes: keep its pages cached across opens, and its attributes.
            config?.pointee.kernel_cache = 1
            config?.pointee.entry_timeout = 86_400
            config?.pointee.attr_timeout = 86_400
            config?.pointee.negative_timeout = 86_400
            return fuse_get_context()?.pointee.private_data
        }
        operations.getattr = { path, st, _ in
            guard let path, let st, let server = MemoryFileSystem.server() else { return -EINVAL }
            return server.attributes(of: String(cString: path), st)
        }
        operations.open = { path, info in
            guard let path, let server = MemoryFileSystem.server() else { return -EINVAL }
            info?.pointee.keep_cache = 1
            return server.open(String(cString: path))
        }
        operations.read = { _, buffer, size, offset, _ in
            guard let buffer, let server = MemoryFileSystem.server(), offset >= 0 else { return -EINVAL }
            return server.read(into: buffer, size: size, offset: Int(offset))
        }
        operations.release = { path, _ in
            guard let path, let server = MemoryFileSystem.server() else { return 0 }
            if server.release(String(cString: path)), let fuse = fuse_get_context()?.pointee.fuse {
                fuse_exit(fuse)
            }
            return 0
        }
        return operations
    }
}
