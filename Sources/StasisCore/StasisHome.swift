import Foundation

/// The on-disk layout under `$STASIS_HOME` (default `~/.stasis`).
public struct StasisHome: Sendable, Equatable {
    /// The root folder.
    public let root: URL

    public init(root: URL) { self.root = root.standardizedFileURL }

    /// `$STASIS_HOME` if set, else `~/.stasis`.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> StasisHome {
        if let path = environment["STASIS_HOME"], !path.isEmpty {
            return StasisHome(root: URL(fileURLWithPath: path))
        }
        return StasisHome(root: FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".stasis"))
    }

    /// Guest kernels fetched by setup: `kernel/<version>/`, and `kernel/current` pointing at one.
    public var kernels: URL { root.appendingPathComponent("kernel") }
    /// The kernel setup selected.
    public var currentKernel: URL { kernels.appendingPathComponent("current") }
    /// The guest agent binary installed by setup.
    public var guestAgent: URL { root.appendingPathComponent("guest/stasis-init") }
    /// Built initramfs files, cached by content.
    public var initramfs: URL { root.appendingPathComponent("initramfs") }
    /// Root filesystem images: `images/<name>/`.
    public var images: URL { root.appendingPathComponent("images") }
    /// Machine run folders: `machines/<id>/`.
    public var machines: URL { root.appendingPathComponent("machines") }
    /// Snapshot folders: `snapshots/<id>/`.
    public var snapshots: URL { root.appendingPathComponent("snapshots") }
    /// Files delta chunks are compressed against (guest kernels), hard-linked here by SHA-256 so
    /// that refetching a kernel cannot change the bytes a snapshot needs.
    public var references: URL { root.appendingPathComponent("references") }
    /// The context log of every agent session (SQLite, WAL).
    public var contextLog: URL { root.appendingPathComponent("context.sqlite") }
    /// Scratch space for work in progress; everything here may be deleted when no stasis runs.
    public var tmp: URL { root.appendingPathComponent("tmp") }

    /// Creates the top-level folders if they are missing.
    public func prepare() throws {
        for url in [root, kernels, initramfs, images, machines, snapshots, tmp] {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        }
    }
}
