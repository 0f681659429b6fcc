import Foundation

/// Where a sparse file's data is.
public enum SparseFile {
    // Linux's lseek whences; Glibc exports them only under _GNU_SOURCE.
    static let seekData: Int32 = 3
    static let seekHole: Int32 = 4

    /// The byte ranges of `fd` that may hold data: everything outside them is a hole and reads as
    /// zeros. A file system without SEEK_DATA reports the whole file as data.
    public static func dataRanges(_ fd: Int32, size: Int) throws -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var offset = 0
        while offset < size {
            let start = Int(lseek(fd, off_t(offset), seekData))
            if start < 0 {
                if errno == ENXIO { break }  // only a hole is left
                if errno == EINVAL || errno == EOPNOTSUPP {
                    ranges.append(offset ..< size)
                    break
                }
                throw StasisError(.ioFailure, "cannot find data after offset \(offset)", cause: Errno())
            }
            if start >= size { break }
            let hole = Int(lseek(fd, off_t(start), seekHole))
            let end = hole < 0 ? size : min(max(hole, start + 1), size)
            ranges.append(start ..< end)
            offset = end
        }
        return ranges
    }
}
