import Crypto
import Foundation

/// SHA-256 of a file's content that reads only the allocated parts of a sparse file: the file is
/// hashed as 4 KiB blocks, where an all-zero block (stored or a hole) contributes nothing but its
/// place. A sparse copy and the original have the same digest, and a 512 MiB guest memory file
/// with 80 MB in use costs 80 MB of reading, not 512.
public enum FileDigest {
    // Linux's lseek whences for sparse files; Glibc's module hides them behind _GNU_SOURCE.
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4

    /// Block size of the digest: one guest page.
    public static let blockSize = 4096

    /// The digest as lowercase hex, prefixed "sha256b:" so it is not mistaken for a plain SHA-256.
    public static func of(_ url: URL) throws -> String {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open \(url.path)", cause: Errno()) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StasisError(.ioFailure, "cannot stat \(url.path)", cause: Errno()) }
        let size = Int64(st.st_size)
        var hasher = SHA256()
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            let dataStart = Int64(lseek(fd, off_t(offset), seekData))
            if dataStart < 0 { break }  // ENXIO: only a hole is left
            let holeEnd = Int64(lseek(fd, off_t(dataStart), seekHole))
            let holeStart: Int64 = holeEnd < 0 ? size : Swift.min(holeEnd, size)
            var position = dataStart / Int64(blockSize) * Int64(blockSize)
            while position < holeStart {
                let want = Int(Swift.min(Int64(chunk), holeStart - position))
                let n = pread(fd, buffer.baseAddress, want, off_t(position))
                guard n > 0 else { throw StasisError(.ioFailure, "cannot read \(url.path)", cause: Errno()) }
                var block = 0
                while block < n {
                    let length = min(blockSize, n - block)
                    let slice = UnsafeRawBufferPointer(rebasing: buffer[block ..< block + length])
                    if !isZero(slice) {
                        var index = (position + Int64(block)) / Int64(blockSize)
                        withUnsafeBytes(of: &index) { hasher.update(bufferPointer: $0) }
                        hasher.update(bufferPointer: slice)
                    }
                    block += length
                }
                position += Int64(n)
            }
            offset = Swift.max(holeStart, position)
        }
        var total = size
        withUnsafeBytes(of: &total) { hasher.update(bufferPointer: $0) }
        return "sha256b:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    private static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let words = bytes.count / 8
        let w = bytes.baseAddress?.assumingMemoryBound(to: UInt64.self)
        if let w {
            for i in 0 ..< words where w[i] != 0 { return false }
        }
        for i in words * 8 ..< bytes.count where bytes[i] != 0 { return false }
        return true
    }
}
