import Synchronization

/// Time spent inside step bodies (the model's reply, the tool), summed across threads, so that a
/// road's own overhead is its wall time minus this.
final class BodyClock: Sendable {
    private let total = Mutex(Duration.zero)

    func add(_ duration: Duration) { total.withLock { $0 += duration } }

    var milliseconds: Double { total.withLock { $0.milliseconds } }
}
