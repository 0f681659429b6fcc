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
