import Agents
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A client of the stasis HTTP API, used by the `stasis session` commands.
public struct StasisClient: Sendable {
    /// The server, e.g. `http://127.0.0.1:7878`.
    public let baseURL: String
    let token: String
    let http: HTTPClient

    public init(baseURL: String, token: String, http: HTTPClient = .shared) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.http = http
    }

    /// Creates a session.
    public func createSession(_ request: CreateSessionRequest) async throws -> SessionInfo {
        try await call(.POST, "/v1/sessions", body: request)
    }

    /// Every session.
    public func sessions() async throws -> [SessionInfo] {
        let list: SessionList = try await call(.GET, "/v1/sessions")
        return list.sessions
    }

    /// One session by id or prefix.
    public func session(_ id: String) async throws -> SessionInfo {
        try await call(.GET, "/v1/sessions/\(id)")
    }

    /// Deletes a session.
    public func deleteSession(_ id: String) async throws {
        _ = try await raw(.DELETE, "/v1/sessions/\(id)", body: nil)
    }

    /// Sends a message; with `wait`, returns when its turn has ended.
    public func send(_ id: String, text: String, wait: Bool = false) async throws -> TurnAccepted {
        try await call(.POST, "/v1/sessions/\(id)/messages", body: SendMessageRequest(text: text, wait: wait))
    }

    /// Suspends, resumes or forks a session.
    public func suspend(_ id: String) async throws -> SessionInfo { try await call(.POST, "/v1/sessions/\(id)/suspend") }
    public func resume(_ id: String) async throws -> SessionInfo { try await call(.POST, "/v1/sessions/\(id)/resume") }
    public func fork(_ id: String, atTurn turn: Int? = nil) async throws -> SessionInfo {
        try await call(.POST, "/v1/sessions/\(id)/fork" + (turn.map { "?turn=\($0)" } ?? ""))
    }

    /// The session's records after `after`, then (with `follow`) new ones as they are appended.
    public func events(_ id: String, after: Int64 = 0, follow: Bool = true) -> AsyncThrowingStream<APIRecord, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var request = HTTPClientRequest(url: "\(baseURL)/v1/sessions/\(id)/events?after=\(after)&follow=\(follow)")
                    request.headers.add(name: "Authorization", value: "Bearer \(token)")
                    request.headers.add(name: "Accept", value: "text/event-stream")
                    let response = try await execute(request, timeout: .hours(24 * 365))
                    guard response.status == .ok else {
                        throw try await Self.error(response)
                    }
                    var decoder = ServerSentEventDecoder()
                    for try await chunk in response.body {
                        for event in decoder.feed(chunk.readableBytesView) {
                            continuation.yield(try APIRecord(json: event.data))
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    // MARK: Plumbing

    private struct Empty: Encodable {}

    private func call<Answer: Decodable>(_ method: HTTPMethod, _ path: String) async throws -> Answer {
        try await call(method, path, body: Optional<Empty>.none)
    }

    private func call<Answer: Decodable, Body: Encodable>(_ method: HTTPMethod, _ path: String, body: Body?) async throws -> Answer {
        let data = try await raw(method, path, body: try body.map { try JSONEncoder().encode($0) })
        do {
            return try JSONDecoder().decode(Answer.self, from: data)
        } catch {
            throw APIClientError.malformed("the server's answer to \(method) \(path) is not what this client expects: \(error)")
        }
    }

    private func raw(_ method: HTTPMethod, _ path: String, body: Data?) async throws -> Data {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        // A turn with `wait` can take as long as its tools; the server has its own limits.
        let response = try await execute(request, timeout: .hours(1))
        guard (200 ..< 300).contains(Int(response.status.code)) else { throw try await Self.error(response) }
        let buffer = try await response.body.collect(upTo: 64 << 20)
        return Data(buffer.readableBytesView)
    }

    private func execute(_ request: HTTPClientRequest, timeout: TimeAmount) async throws -> HTTPClientResponse {
        do {
            return try await http.execute(request, timeout: timeout)
        } catch {
            throw APIClientError.unreachable("cannot reach the stasis server at \(baseURL) (\(error)): start it with `stasis serve`")
        }
    }

    private static func error(_ response: HTTPClientResponse) async throws -> APIClientError {
        let buffer = try await response.body.collect(upTo: 1 << 20)
        if let answer = try? JSONDecoder().decode(APIErrorBody.self, from: Data(buffer.readableBytesView)) {
            return .server(status: Int(response.status.code), code: answer.error.code, message: answer.error.message)
        }
        return .server(status: Int(response.status.code), code: "http", message: "the server answered \(response.status)")
    }
}
