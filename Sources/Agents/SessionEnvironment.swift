import Context
import Logging
import Machines
import Models
import Snapshots
import StasisCore

/// What every session of one stasis home shares.
public struct SessionEnvironment: Sendable {
    /// The stasis home.
    public let home: StasisHome
    /// The context log of every session.
    public let log: ContextLog
    /// Machines and snapshots.
    public let snapshotter: Snapshotter
    /// Makes the model a session's configuration names.
    public let makeModel: @Sendable (ModelConfiguration) throws -> any ModelProvider
    /// Where sessions report what they do.
    public let logger: Logger

    public init(home: StasisHome, log: ContextLog, snapshotter: Snapshotter? = nil,
                makeModel: @escaping @Sendable (ModelConfiguration) throws -> any ModelProvider, logger: Logger) {
        self.home = home
        self.log = log
        self.snapshotter = snapshotter ?? Snapshotter(home: home)
        self.makeModel = makeModel
        self.logger = logger
    }

    var machines: MachineStore { snapshotter.machines }

    /// Snapshots being taken right now, for the sweep of unneeded ones.
    let snapshotsInFlight = SnapshotsInFlight()
}
