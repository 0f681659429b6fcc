import Models

/// The JSON body of a user message record.
public struct UserMessageBody: Codable, Sendable, Equatable {
    public var text: String
    /// The turn this message starts; its `turnEnded` record carries the same id.
    public var turn: String

    public init(text: String, turn: String) {
        self.text = text
        self.turn = turn
    }
}

/// The JSON body of an assistant message record.
public struct AssistantMessageBody: Codable, Sendable, Equatable {
    public var text: String
    public var toolCalls: [ToolCall]
    public var stopReason: String
    public var usage: ModelUsage?

    public init(text: String, toolCalls: [ToolCall], stopReason: String, usage: ModelUsage?) {
        self.text = text
        self.toolCalls = toolCalls
        self.stopReason = stopReason
        self.usage = usage
    }
}

/// The JSON body of a tool call record, appended just before the tool runs.
public struct ToolCallBody: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var arguments: String

    public init(id: String, name: String, arguments: String) {
        self.id = id
        self.name = name
        self.arguments = arguments
    }
}

/// The JSON body of a tool result record.
public struct ToolResultBody: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    /// What the model is shown.
    public var content: String
    /// The tool failed (bad arguments, non-zero exit, file missing …).
    public var isError: Bool
    /// Output was cut at the session's limit.
    public var truncated: Bool
    /// The call never finished: stasis stopped while it ran.
    public var interrupted: Bool
    /// Wall time in the machine.
    public var milliseconds: Double

    public init(id: String, name: String, content: String, isError: Bool = false, truncated: Bool = false,
                interrupted: Bool = false, milliseconds: Double = 0) {
        self.id = id
        self.name = name
        self.content = content
        self.isError = isError
        self.truncated = truncated
        self.interrupted = interrupted
        self.milliseconds = milliseconds
    }
}

/// The JSON body of a system record: one transition of the session.
public struct SystemEventBody: Codable, Sendable, Equatable {
    /// What happened: created, booted, turnStarted, turnEnded, checkpointed, snapshotting,
    /// suspended, restoring, restored, crashed, recovered, failed, deleted, forked.
    public var event: String
    /// The state the session is in after it.
    public var state: SessionState
    public var configuration: SessionConfiguration?
    public var machine: String?
    public var snapshot: String?
    public var snapshotBytes: UInt64?
    public var milliseconds: Double?
    public var turn: String?
    public var message: String?
    /// For a forked session: the session and sequence number it was forked from.
    public var parent: String?
    public var parentSeq: Int64?
    /// For `checkpointed`: the snapshot of the machine as `turn` left it, kept for forking the
    /// session at that turn (`snapshot` stays the session's own last snapshot).
    public var checkpoint: String?

    public init(_ event: String, state: SessionState, configuration: SessionConfiguration? = nil, machine: String? = nil,
                snapshot: String? = nil, snapshotBytes: UInt64? = nil, milliseconds: Double? = nil, turn: String? = nil,
                message: String? = nil, parent: String? = nil, parentSeq: Int64? = nil, checkpoint: String? = nil) {
        self.event = event
        self.state = state
        self.configuration = configuration
        self.machine = machine
        self.snapshot = snapshot
        self.snapshotBytes = snapshotBytes
        self.milliseconds = milliseconds
        self.turn = turn
        self.message = message
        self.parent = parent
        self.parentSeq = parentSeq
        self.checkpoint = checkpoint
    }
}
