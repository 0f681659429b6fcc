import Foundation

/// The one error type of Stasis: a code a script can branch on, a message a person can act on,
/// and the underlying cause.
public struct StasisError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is; also decides the CLI's exit code.
    public enum Code: String, Sendable, Codable {
        case invalidArgument
        case notFound
        case alreadyExists
        case invalidState
        case missingDependency
        case toolFailed
        case ioFailure
        case corrupted
        case guestFailure
        case protocolError
        case timeout
        case unsupported
        case internalError
    }

    public let code: Code
    public let message: String
    public let cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        guard let cause else { return message }
        return "\(message): \(cause)"
    }
}

/// An errno value captured at the point of failure, printed as the C library names it.
public struct Errno: Error, CustomStringConvertible, Sendable {
    public let value: Int32
    public init(_ value: Int32 = errno) { self.value = value }
    public var description: String { String(cString: strerror(value)) + " (errno \(value))" }
}
