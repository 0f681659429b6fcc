import ChunkStore
import Foundation
import Machines

/// `snapshots/<id>/manifest.json`: what a snapshot is and how to check it. Written last and
/// atomically, after every part it lists is on disk and fsynced: a snapshot folder without a
/// manifest is not a snapshot.
public struct SnapshotManifest: Codable, Sendable, Equatable {
    /// Bumped when the layout changes incompatibly; readers refuse versions they do not know.
    /// Format 5 may keep a small device state delta in the manifest (`stateInline`); format 4
    /// may keep device state as a delta over a base state (`stateBase`) and compresses the frame
    /// list's delta against its base list (`framesDeltaIsOverBaseJSON`); format 3 keeps
    /// the RAM's frame list in a file of its own (`memoryFramesFile`); format 2 kept it in the
    /// manifest; format 1 kept RAM as a file.
    public static let currentFormat = 5
    /// Formats this stasis reads.
    public static let readableFormats = 1 ... 5

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
    /// Device state (and RAM when there is no other memory part), guest RAM as a file in the
    /// folder (format 1, and archives), disk layer.
    public var state: Part
    /// The device state `state` is a delta over: a chunk of the store holding a whole stream,
    /// which `state` (one zstd frame) was compressed against as its prefix. Nil: `state` is the
    /// whole stream, raw or zstd-compressed.
    public var stateBase: ChunkRef?
    /// The device state delta itself when it is small (format 5), kept here because a file of its
    /// own would take a whole 4 KiB block for its few hundred bytes. `state` then names no file:
    /// it records the size, 0 bytes allocated, and a plain "sha256:" digest of these bytes.
    public var stateInline: Data?
    public var memory: Part?
    public var disk: Part
    /// Guest RAM in the chunk store, frame by frame: listed flat, never as a delta of a parent,
    /// so the 1,000th snapshot of a session restores like the first.
    public var memoryFrames: FrameList?
    /// Where `memoryFrames` is kept (format 3): a zstd-compressed JSON file of the folder holding
    /// a `FrameListDelta` over `memoryFramesBase`, read with the manifest except by listings
    /// (`SnapshotStore.list`), so that listing thousands of snapshots decodes none of them.
    public var memoryFramesFile: Part?
    /// The whole frame list the delta in `memoryFramesFile` is over: a chunk of the store (the
    /// list's JSON), shared by the snapshots of a session until they differ from it too much.
    public var memoryFramesBase: ChunkRef?
    /// The frame list's stored bytes, for listings that do not read it.
    public var memoryFramesStoredBytes: Int?
    /// Stored bytes of the chunks this snapshot added to the store when it was made: what it
    /// cost beyond the frames earlier snapshots already held.
    public var memoryAddedBytes: Int?
    /// The disk layer's tier (nil: 0): a layer that merged the layers of tier L above its base
    /// is of tier L + 1 (`Snapshotter.diskMergeFanout`).
    public var diskLevel: Int?
    /// With `--leave-running`: the overlay in the machine's run folder this snapshot froze, whose
    /// content equals its disk; while that machine runs, a later snapshot of it merging down to
    /// this one copies only the layers above that overlay.
    public var frozenLayer: String?

    /// The format of the layer `disk.qcow2` sits on: an image's raw rootfs or a snapshot's qcow2.
    public var diskBaseFormat: String { diskBase.hasSuffix(".qcow2") ? "qcow2" : "raw" }

    /// Every part kept as a file in the snapshot folder, for checking.
    public var parts: [Part] { (stateInline == nil ? [state] : []) + [disk] + [memory, memoryFramesFile].compactMap { $0 } }

    /// Stored bytes of the RAM: its frames (each counted once), its file, or the state stream.
    public var memoryStoredBytes: Int {
        memoryFrames?.storedBytes ?? memoryFramesStoredBytes ?? Int(memory?.allocated ?? state.allocated)
    }

    /// Bytes the device state takes: its file's allocation, or an inline delta's length.
    public var stateStoredBytes: UInt64 { stateInline == nil ? state.allocated : state.size }

    /// Whether `memoryFramesFile` was compressed against the base list's JSON as a zstd prefix
    /// (format 4), not alone.
    public var framesDeltaIsOverBaseJSON: Bool { format >= 4 }

    /// Whether the guest RAM is in the state stream rather than a part of its own.
    public var ramInState: Bool { memory == nil && memoryFrames == nil && memoryFramesFile == nil }
}
