import Context
import Foundation

/// A session record as the API sends it.
public struct APIRecord: Sendable, Equatable {
    public var session: String
    public var seq: Int64
    public var kind: RecordKind
    /// The record's body, JSON text.
    public var body: String

    /// Parses the JSON the API sends (`EventStream.json`).
    init(json: String) throws {
        guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let session = object["session"] as? String,
              let seq = (object["seq"] as? NSNumber)?.int64Value,
              let kindText = object["kind"] as? String, let kind = RecordKind(rawValue: kindText),
              let body = object["body"]
        else { throw APIClientError.malformed("a record the server sent is not valid: \(json.prefix(200))") }
        self.session = session
        self.seq = seq
        self.kind = kind
        self.body = String(decoding: try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .fragmentsAllowed]), as: UTF8.self)
    }

    /// Decodes the body as `T`.
    public func decodeBody<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(body.utf8))
    }
}

/// What went wrong talking to a stasis server.
public enum APIClientError: Error, CustomStringConvertible {
    /// The server answered with an error.
    case server(status: Int, code: String, message: String)
    /// The server could not be reached.
    case unreachable(String)
    /// The answer made no sense.
    case malformed(String)

    public var description: String {
        switch self {
        case .server(_, _, let message): message
        case .unreachable(let message), .malformed(let message): message
        }
    }
}
