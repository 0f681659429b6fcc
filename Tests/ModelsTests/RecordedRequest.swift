@testable import Models

/// A request the fixture server received.
struct RecordedRequest: Sendable {
    var method: String
    var path: String
    var headers: [(name: String, value: String)]
    var body: String

    /// The first value of header `name`, compared without case.
    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// The body parsed as JSON.
    func json() throws -> JSONValue {
        try JSONValue.parse(body)
    }
}
