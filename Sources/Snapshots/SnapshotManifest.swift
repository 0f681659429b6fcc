import Foundation
import Machines

/// `snapshots/<id>/manifest.json`: what a snapshot is and how to check it. Written last and
/// atomically, after every part it lists is on disk and fsynced: a snapshot folder without a
/// manifest is not a snapshot.
public struct SnapshotManifest: Codable, Sendable, Equatable {
    /// Bumped when the layout changes incompatibly; readers refuse versions they do not know.
    public static let currentFormat = 1

    public struct Part: Codable, Sendable, Equatable {
        /// File name in the snapshot folder.
        public var file: String
        /// Bytes (logical size for sparse files).
        public var size: UInt64
        /// Bytes actually allocated on disk.
        public var allocated: UInt64
        /// `FileDigest` of the content.
        public var digest: String
    }

    public struct Engine: Codable, Sendable, Equatable {
        public var name: String
        public var version: String
        public var accelerator: String
        /// Machine type and devices in order; restore must build the same.
        public var deviceLayout: [String]
    }

    public var format: Int
    public var id: String
    public var tag: String?
    public var created: Date
    /// The machine it was taken from.
    public var machineID: String
    public var machineName: String
    public var spec: MachineSpec
    public var engine: Engine
    public var kernel: String
    /// The image the machine booted from, and the disk layer this snapshot's disk sits on.
    public var image: String
    public var diskBase: String
    /// The snapshot this one's disk and history continue, if the machine was restored from one.
    public var parent: String?
    /// Generation of the guest when saved; a restore runs as generation + 1.
    public var generation: UInt64
    /// How long the guest was paused to take it.
    public var pausedMilliseconds: Double
    /// Device state (and RAM when `memory` is nil), guest RAM, disk layer.
    public var state: Part
    public var memory: Part?
    public var disk: Part

    /// Every part, for checking.
    public var parts: [Part] { [state, disk] + (memory.map { [$0] } ?? []) }
}
