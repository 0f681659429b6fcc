import Foundation
import StasisCore

/// An advisory lock on a file (flock), released when closed or when the process dies, so a
/// crashed stasis never leaves a lock behind.
public final class FileLock: @unchecked Sendable {
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    /// Takes the lock, waiting for it; `shared` lets other shared holders in at the same time.
    public static func acquire(_ url: URL, shared: Bool = false) throws -> FileLock {
        let fd = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open lock \(url.path)", cause: Errno()) }
        while flock(fd, shared ? LOCK_SH : LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let err = Errno()
            close(fd)
            throw StasisError(.ioFailure, "cannot lock \(url.path)", cause: err)
        }
        return FileLock(fd: fd)
    }

    /// Takes the lock if nobody holds it; nil otherwise.
    public static func tryAcquire(_ url: URL) throws -> FileLock? {
        let fd = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open lock \(url.path)", cause: Errno()) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 { return FileLock(fd: fd) }
        close(fd)
        return nil
    }

    deinit { close(fd) }
}

extension FileLock {
    /// Runs `body` holding the lock at `url` (shared with other shared holders if `shared`).
    public static func withLock<R>(_ url: URL, shared: Bool = false, _ body: () throws -> R) throws -> R {
        let lock = try acquire(url, shared: shared)
        defer { withExtendedLifetime(lock) {} }
        return try body()
    }
}
