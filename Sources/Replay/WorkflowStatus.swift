/// Where a workflow run stands in the journal.
public enum WorkflowStatus: String, Sendable, Codable {
    /// Started and not finished: `resumeUnfinished()` picks it up.
    case running
    /// Returned a result, journaled in the run's row.
    case completed
    /// Threw an error (or broke a history limit); the message is journaled as its result.
    case failed
    /// Ended by `continueAsNew`; the next run of the same workflow id carries on.
    case continuedAsNew
}
