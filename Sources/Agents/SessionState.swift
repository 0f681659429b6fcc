/// Where a session is in its life (DESIGN.md, "Agent sessions"):
/// new → booting → running ⇄ idle → snapshotting → suspended → restoring → running …
public enum SessionState: String, Codable, Sendable, CaseIterable {
    /// Created, no machine yet.
    case new
    /// Its machine is booting.
    case booting
    /// A turn is in progress.
    case running
    /// The machine runs and waits for the next message; suspends after the idle timeout.
    case idle
    /// The machine is being snapshotted.
    case snapshotting
    /// No machine: the session lives in its log and its last snapshot.
    case suspended
    /// The last snapshot is being restored.
    case restoring
    /// Something failed that needs a person: the log says what.
    case failed
    /// Removed; its log is kept (append-only) but it is listed no more.
    case deleted

    /// Whether a machine process may exist in this state.
    var hasMachine: Bool { [.booting, .running, .idle, .snapshotting, .restoring].contains(self) }
}
