import Foundation
import StasisCore

/// The few POSIX file operations the store needs, with EINTR and short transfers handled once.
enum FileIO {
    /// Reads up to `count` bytes at `offset` into `buffer`; fewer only at end of file.
    static func read(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws -> Int {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StasisError(.ioFailure, "cannot read \(count) bytes at offset \(offset)", cause: Errno())
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads exactly `count` bytes at `offset`; a short file is `.corrupted`.
    static func readExactly(_ fd: Int32, count: Int, at offset: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            guard let base = buffer.baseAddress else { initialized = 0; return }
            let n = try read(fd, into: base, count: count, at: offset)
            initialized = n
            guard n == count else {
                throw StasisError(.corrupted, "file ends after \(offset + n) bytes; expected \(count) bytes at offset \(offset)")
            }
        }
    }

    /// Writes all of `bytes` at `offset`.
    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, base + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw StasisError(.ioFailure, "cannot write \(bytes.count) bytes at offset \(offset)", cause: Errno())
            }
            done += n
        }
    }

    /// Appends all of `bytes` at the file's current position.
    static func append(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, base + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw StasisError(.ioFailure, "cannot write \(bytes.count) bytes", cause: Errno())
            }
            done += n
        }
    }

    /// Whether every byte is zero. memcmp against itself shifted by one byte is glibc's vectorized
    /// comparison, several times faster than a Swift loop.
    static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return true }
        guard base.load(as: UInt8.self) == 0 else { return false }
        return memcmp(base, base + 1, bytes.count - 1) == 0
    }

    /// Opens `path` for reading.
    static func openForReading(_ path: String) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let error = Errno()
            let code: StasisError.Code = error.value == ENOENT ? .notFound : .ioFailure
            throw StasisError(code, "cannot open \(path)", cause: error)
        }
        return fd
    }

    /// The size of an open file.
    static func size(_ fd: Int32, path: String) throws -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StasisError(.ioFailure, "cannot stat \(path)", cause: Errno()) }
        return Int(st.st_size)
    }

    /// A name for a temporary file beside `path`, hidden and unique enough for O_EXCL.
    static func temporaryPath(beside path: String) -> String {
        let slash = path.lastIndex(of: "/").map { path.index(after: $0) } ?? path.startIndex
        return path[..<slash] + "." + path[slash...] + ".tmp-" + String(UInt64.random(in: 0 ... .max), radix: 16)
    }
}
