import Foundation
import GRDB

/// The machine and storage the context benchmark ran on, for the report's header.
struct ContextHost: Encodable {
    var date: String
    var cores: Int
    var kernel: String
    /// File system type, device and mount point of the folder the databases were in.
    var filesystem: String
    var sqlite: String
    var load: LoadMonitor.Summary

    static func collect(folder: URL, load: LoadMonitor.Summary) -> ContextHost {
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        let sqlite = (try? DatabaseQueue().read { try String.fetchOne($0, sql: "SELECT sqlite_version()") }) ?? nil
        return ContextHost(date: ISO8601DateFormatter().string(from: Date()), cores: ProcessInfo.processInfo.activeProcessorCount,
                           kernel: kernel, filesystem: mount(of: folder), sqlite: sqlite ?? "?", load: load)
    }

    /// The /proc/mounts entry whose mount point is the longest prefix of `folder`.
    private static func mount(of folder: URL) -> String {
        let path = folder.resolvingSymlinksInPath().path
        let mounts = ((try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? "").split(separator: "\n")
            .map { $0.split(separator: " ").map(String.init) }
            .filter { $0.count >= 3 && (path == $0[1] || path.hasPrefix($0[1] == "/" ? "/" : $0[1] + "/")) }
        guard let best = mounts.max(by: { $0[1].count < $1[1].count }) else { return "?" }
        return "\(best[2]) on \(best[0]) (\(best[1]))"
    }

    var header: String {
        """
        \(date), \(cores) cores, kernel \(kernel), SQLite \(sqlite) (GRDB), databases on \(filesystem)
        load: \(load.text)
        """
    }
}
