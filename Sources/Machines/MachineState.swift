/// Where a machine is in its life. Transitions are explicit; anything else is a bug or a race
/// and is refused.
///
///     created → starting → running ⇄ paused
///                  │          │
///                  ▼          ▼
///               failed ← stopping → stopped
public enum MachineState: String, Codable, Sendable, CaseIterable {
    case created, starting, running, paused, stopping, stopped, failed

    /// True while a QEMU process should exist for the machine.
    public var hasProcess: Bool {
        switch self {
        case .starting, .running, .paused, .stopping: true
        case .created, .stopped, .failed: false
        }
    }

    /// Whether moving from `self` to `next` is allowed.
    public func canMove(to next: MachineState) -> Bool {
        switch (self, next) {
        case (.created, .starting), (.stopped, .starting), (.failed, .starting),
             (.starting, .running), (.starting, .failed), (.starting, .stopping),
             (.running, .paused), (.paused, .running),
             (.running, .stopping), (.paused, .stopping),
             (.running, .failed), (.paused, .failed), (.stopping, .failed),
             (.stopping, .stopped), (.running, .stopped), (.paused, .stopped):
            true
        default:
            false
        }
    }
}
