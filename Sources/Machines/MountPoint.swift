import CStasis
import Foundation
import StasisCore

/// A folder something may be mounted on (a lazily restored machine's `memory.fuse`).
enum MountPoint {
    private static let detachFlags: Int32 = 2 | 8  // MNT_DETACH | UMOUNT_NOFOLLOW

    /// Whether a file system is mounted on `folder` in this mount namespace.
    static func isMounted(_ folder: URL) -> Bool {
        let table = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        let path = Substring(folder.standardizedFileURL.path)
        // Field 5 is the mount point (spaces in it are escaped as \040).
        return table.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(4).first == path }
    }

    /// Detaches whatever is mounted on `folder`: umount2 as root, else `fusermount3 -u -z` (a
    /// FUSE mount its user made). Throws if it is still mounted afterwards.
    static func detach(_ folder: URL) throws {
        guard isMounted(folder) else { return }
        if cshim_umount(folder.path, detachFlags) != 0, let tool = HostTool.which("fusermount3") {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = ["-u", "-z", folder.path]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            if (try? process.run()) != nil { process.waitUntilExit() }
        }
        if isMounted(folder) {
            throw StasisError(.ioFailure, "\(folder.path) is still mounted: unmount it (fusermount3 -u -z \(folder.path), or umount -l as root) and try again")
        }
    }
}
