/// How much history one workflow run may journal before it must `continueAsNew` (Temporal's defaults).
public struct HistoryLimits: Sendable, Equatable {
    /// Events a run may journal; one more is an error.
    public var maxEvents: Int
    /// Payload bytes a run may journal; more is an error.
    public var maxBytes: Int
    /// Event count at which the warning handler is called (once per run and engine).
    public var warnEvents: Int
    /// Payload bytes at which the warning handler is called (once per run and engine).
    public var warnBytes: Int

    /// Limits with Temporal's defaults: error past 51,200 events or 50 MB, warning at 10,240 or 10 MB.
    public init(maxEvents: Int = 51_200, maxBytes: Int = 50 << 20, warnEvents: Int = 10_240, warnBytes: Int = 10 << 20) {
        self.maxEvents = maxEvents
        self.maxBytes = maxBytes
        self.warnEvents = warnEvents
        self.warnBytes = warnBytes
    }

    /// Temporal's limits.
    public static let `default` = HistoryLimits()
}

/// A run's history crossed a warning threshold of its `HistoryLimits`.
public struct HistoryWarning: Sendable, CustomStringConvertible {
    /// The workflow id.
    public let workflowID: String
    /// The run number (1 for the first, one more after each `continueAsNew`).
    public let run: Int
    /// Events journaled in this run so far.
    public let events: Int
    /// Payload bytes journaled in this run so far.
    public let bytes: Int
    /// The limits in force.
    public let limits: HistoryLimits

    /// A sentence a person can act on.
    public var description: String {
        "workflow \"\(workflowID)\" run \(run) has \(events) events and \(bytes) bytes of history "
            + "(warning at \(limits.warnEvents) events / \(limits.warnBytes) bytes, error past \(limits.maxEvents) events / \(limits.maxBytes) bytes): "
            + "call continueAsNew to start a fresh history"
    }
}
