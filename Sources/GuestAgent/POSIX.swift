import Glibc

/// Thin, Foundation-free helpers over the C library for the guest agent.
enum POSIX {
    /// The current errno, as a value.
    static var errno: Int32 { Glibc.errno }

    /// The C library's description of `code`.
    static func describe(_ code: Int32) -> String { String(cString: strerror(code)) }

    /// Reads a whole file, or nil (errno set) if it cannot be read; stops at `limit` bytes.
    static func readFile(_ path: String, limit: Int = Int.max) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                return nil
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0 ..< n])
        }
        return out
    }

    /// Reads a small text file, without its trailing newline.
    static func readText(_ path: String) -> String? {
        guard let bytes = readFile(path, limit: 1 << 20) else { return nil }
        var s = String(decoding: bytes, as: UTF8.self)
        while s.last == "\n" { s.removeLast() }
        return s
    }

    /// Writes all of `bytes` to a blocking fd; false (errno set) on failure.
    @discardableResult
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset) }
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }

    /// Makes the kernel zero every free page it can spare: anonymous memory is mapped and
    /// faulted in for writing (the kernel clears each page it hands out) 16 MiB at a time while
    /// MemFree stays above `reserve`, then unmapped. The pages return to the free lists still
    /// zero, so a snapshot of the guest stores them as nothing. Returns the bytes zeroed.
    static func zeroFreeMemory(reserve: Int = 48 << 20) -> Int {
        let piece = 16 << 20
        var mapped: [UnsafeMutableRawPointer] = []
        defer { for region in mapped { munmap(region, piece) } }
        while let free = memFree(), free > reserve + piece {
            guard let region = mmap(nil, piece, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
                  region != MAP_FAILED else { break }
            mapped.append(region)
            // MADV_POPULATE_WRITE (Linux 5.14) faults the whole range in at once; touch each
            // page on kernels without it (EINVAL). Any other failure (ENOMEM) ends the work.
            if madvise(region, piece, 23) != 0 {
                guard Glibc.errno == EINVAL else { break }
                for offset in stride(from: 0, to: piece, by: 4096) { region.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self) }
            }
        }
        return mapped.count * piece
    }

    /// MemFree from /proc/meminfo, in bytes.
    static func memFree() -> Int? {
        guard let bytes = readFile("/proc/meminfo", limit: 16 << 10) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("MemFree:") {
            let kib = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
            return kib.map { $0 * 1024 }
        }
        return nil
    }

    /// Writes a whole file (created or truncated, or appended to); returns 0 or an errno.
    static func writeFile(_ path: String, _ bytes: [UInt8], mode: UInt32, append: Bool) -> Int32 {
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC)
        let fd = open(path, flags, mode_t(mode))
        guard fd >= 0 else { return Glibc.errno }
        defer { close(fd) }
        return writeAll(fd, bytes) ? 0 : Glibc.errno
    }

    /// Monotonic time in milliseconds.
    static func nowMilliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    /// Nanoseconds since boot, snapshots excluded.
    static func uptimeNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// The kernel release (`uname -r`).
    static func kernelRelease() -> String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// The kernel's hostname.
    static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// True if `path` exists.
    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Creates a folder, ignoring "already exists".
    static func mkdir(_ path: String, _ mode: mode_t = 0o755) { _ = Glibc.mkdir(path, mode) }

    /// Lists a folder's entries (without . and ..).
    static func listDirectory(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: &entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Parses dotted-quad IPv4 into a host-order integer.
    static func parseIPv4(_ text: String) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for p in parts {
            guard let octet = UInt8(p) else { return nil }
            value = value << 8 | UInt32(octet)
        }
        return value
    }
}

/// Writes a line to the console (the serial log on the host).
func log(_ message: String) {
    POSIX.writeAll(2, Array("stasis-init: \(message)\n".utf8))
}
