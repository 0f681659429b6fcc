import Foundation

/// One run of a workflow as the journal holds it.
public struct WorkflowRecord: Sendable, Equatable {
    /// The workflow id, stable across `continueAsNew`.
    public let id: String
    /// The run number: 1, then one more after each `continueAsNew`.
    public let run: Int
    /// The registered workflow name.
    public let name: String
    /// The run's input as JSON.
    public let input: String
    /// Where the run stands.
    public let status: WorkflowStatus
    /// The output as JSON when completed, the error message when failed, else nil.
    public let result: String?
    /// When the run was created.
    public let created: Date
    /// When the run's row last changed.
    public let updated: Date
}
