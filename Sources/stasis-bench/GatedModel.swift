import Models

/// The scripted model behind an `InterruptGate`: a request for the gate's turn fails with
/// `CancellationError`; any other is answered by `ScriptedModel`, its time added to `clock`.
struct GatedModel: ModelProvider {
    let gate: InterruptGate
    let clock: BodyClock
    private let inner = ScriptedModel()

    init(gate: InterruptGate, clock: BodyClock) {
        self.gate = gate
        self.clock = clock
    }

    var description: String { "scripted, stopping at a turn" }

    func stream(_ request: ModelRequest) -> AsyncThrowingStream<ModelEvent, any Error> {
        let lastUser = request.messages.last { $0.role == .user }?.content
        if gate.shouldStop(lastUserMessage: lastUser) {
            return AsyncThrowingStream { $0.finish(throwing: CancellationError()) }
        }
        // ScriptedModel computes its whole reply in stream(); the events are already buffered.
        let start = ContinuousClock.now
        let events = inner.stream(request)
        clock.add(ContinuousClock.now - start)
        return events
    }
}
