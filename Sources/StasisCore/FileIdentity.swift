import Foundation

/// Who a file is right now: device, inode, size, and modification and change times. Any write
/// changes mtime and ctime and a copy is a new inode, so a result computed from a file (a hash)
/// can be trusted while its identity stays the same.
public enum FileIdentity {
    /// The identity of the file at `path`, or nil if it cannot be stat'ed.
    public static func of(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return "\(st.st_dev) \(st.st_ino) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)"
    }
}
