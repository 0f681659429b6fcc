import Foundation

/// What `$STASIS_HOME/machines/<id>/machine.json` holds about one machine.
public struct MachineRecord: Codable, Sendable, Equatable {
    /// 12 hex digits, unique.
    public var id: String
    /// Unique among machines; chosen by the user or generated.
    public var name: String
    public var spec: MachineSpec
    public var state: MachineState
    public var created: Date
    public var started: Date?
    /// The QEMU process while `state.hasProcess`.
    public var pid: Int32?
    /// The accelerator in use and why it was chosen.
    public var accelerator: String?
    public var acceleratorReason: String?
    /// Guest kernel version the machine booted.
    public var kernel: String?
    /// Why the machine failed, with the end of its console log.
    public var failure: String?
    /// Remove the machine once it stops (`--rm`).
    public var autoRemove: Bool
    /// Which engine runs it.
    public var engine: String
    /// The disk overlay the machine writes, in its run folder (it changes when a snapshot leaves
    /// the machine running: the old overlay is frozen and a new one goes on top).
    public var diskFile: String?
    /// Guest RAM: the backing file and whether it is mapped shared (a snapshot can then skip
    /// copying RAM) or private over a snapshot's memory (forks share it copy-on-write).
    public var memoryFile: String?
    public var memoryShared: Bool?
    /// The snapshot the machine was restored from, if any.
    public var restoredFrom: String?
    /// The lowest disk layer outside the run folder (the image, or the snapshot restored from) and
    /// its format: a snapshot's disk collapses everything above it, so that no snapshot's layer
    /// chain ever points into a machine's run folder.
    public var diskBase: String?
    public var diskBaseFormat: String?
    /// Bumped on every restore; the guest can read it in /run/stasis/generation.
    public var generation: UInt64?
    /// The newest snapshot taken of this machine leaving it running: the parent of its next
    /// snapshot, whose disk is then only the layers written since, over this one's disk.
    public var lastSnapshot: LastSnapshot?

    /// A snapshot taken leaving the machine running, and where its disk stands in the machine's.
    public struct LastSnapshot: Codable, Sendable, Equatable {
        /// The snapshot's id.
        public var id: String
        /// Its disk (a qcow2 file in its folder).
        public var disk: String
        /// The run-folder overlay it froze: that overlay's content (with everything below) equals `disk`.
        public var layer: String

        public init(id: String, disk: String, layer: String) {
            self.id = id
            self.disk = disk
            self.layer = layer
        }
    }

    public init(id: String, name: String, spec: MachineSpec, autoRemove: Bool, engine: String) {
        self.id = id
        self.name = name
        self.spec = spec
        self.state = .created
        self.created = Date()
        self.autoRemove = autoRemove
        self.engine = engine
    }
}
