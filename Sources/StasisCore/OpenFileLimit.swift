import Foundation

/// The open-file limit of this process. A restore late in a long session keeps one descriptor
/// per pack of page patches its frame list names (~550 after 1,000 snapshots), and a lazily
/// restored machine's server keeps them for the machine's lifetime: more than Debian's default
/// soft limit of 1,024 allows in longer sessions. The hard limit is the administrator's.
public enum OpenFileLimit {
    /// Raises the soft limit to the hard limit; returns the soft limit now in force.
    @discardableResult
    public static func raiseToHardLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }
}
