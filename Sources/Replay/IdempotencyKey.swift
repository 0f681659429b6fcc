/// A key that stays the same every time a step is re-executed, for side effects that must happen once.
public struct IdempotencyKey: Sendable, Hashable, CustomStringConvertible {
    /// Where a step's key comes from.
    public enum Source: Sendable, Hashable {
        /// Derived from the step's place in history: `<workflow id>/<run>/<seq>`.
        case derived
        /// A key the caller supplies (an order number, a request id); it must be stable across re-executions.
        case custom(String)
    }

    /// The key's text, to hand to the receiving service (an `Idempotency-Key` header, a unique column).
    public let value: String

    /// Wraps a key's text.
    public init(_ value: String) { self.value = value }

    /// The key's text.
    public var description: String { value }
}
