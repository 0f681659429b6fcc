import Foundation

/// What a client sees of a session.
public struct SessionInfo: Codable, Sendable, Equatable {
    public var id: String
    public var state: SessionState
    public var configuration: SessionConfiguration
    /// The machine running the session, when it has one.
    public var machine: String?
    /// The last snapshot of the session's machine.
    public var snapshot: String?
    /// The sequence number of the session's last log record.
    public var lastSeq: Int64
    /// The session it was forked from.
    public var parent: String?
}
