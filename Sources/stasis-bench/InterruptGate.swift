import Synchronization

/// Stops an agent loop at the first model call of one turn, the way a crash would: the call
/// throws `CancellationError` (a Replay run stays `running`), and the moment is kept, so a resume
/// can be timed from its start to the point where it would call the model live again.
final class InterruptGate: Sendable {
    /// The user message of the turn to stop at.
    let stopMessage: String
    private let fired = Mutex<ContinuousClock.Instant?>(nil)

    init(stopMessage: String) {
        self.stopMessage = stopMessage
    }

    /// True (and the time noted) if a request whose last user message is `message` must stop.
    func shouldStop(lastUserMessage message: String?) -> Bool {
        guard message == stopMessage else { return false }
        let now = ContinuousClock.now
        fired.withLock { if $0 == nil { $0 = now } }
        return true
    }

    /// When the loop reached the stop turn, if it did.
    var firedAt: ContinuousClock.Instant? { fired.withLock { $0 } }
}
