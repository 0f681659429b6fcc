import Agents
import Context
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceLifecycle
import StasisCore
import Synchronization

/// The HTTP API, version 1 (docs/openapi.yaml describes it; a test checks the two agree).
struct APIRoutes: Sendable {
    let manager: SessionManager
    let log: ContextLog
    /// Request bodies larger than this are refused with 413.
    let maxBodyBytes: Int
    /// How often a quiet event stream sends a comment, to find out whether its client is still there.
    let heartbeat: Duration

    /// Every route this server serves, under /v1.
    func add(to router: Router<BasicRequestContext>) {
        router.get("/v1/health") { _, _ in ["status": "ok"] }
        let sessions = router.group("/v1/sessions")
        sessions.post { request, context in try await create(request, context) }
        sessions.get { _, _ in SessionList(sessions: try await manager.list()) }
        sessions.get(":id") { _, context in try await session(context).info() }
        sessions.delete(":id") { _, context in
            try await manager.delete(try context.parameters.require("id"))
            return Response(status: .noContent)
        }
        sessions.post(":id/messages") { request, context in try await send(request, context) }
        sessions.get(":id/records") { request, context in try await records(request, context) }
        sessions.get(":id/events") { request, context in try await events(request, context) }
        sessions.post(":id/suspend") { _, context in
            let session = try await session(context)
            try await session.suspend()
            return try await session.info()
        }
        sessions.post(":id/resume") { _, context in
            let session = try await session(context)
            try await session.resume()
            return try await session.info()
        }
        sessions.post(":id/fork") { request, context in
            let turn = try Self.integer(request, "turn").map { Int(clamping: $0) }
            let info = try await manager.fork(try context.parameters.require("id"), atTurn: turn)
            return EditedResponse(status: .created, response: info)
        }
    }

    private func session(_ context: BasicRequestContext) async throws -> Session {
        try await manager.session(try context.parameters.require("id"))
    }

    private func create(_ request: Request, _ context: BasicRequestContext) async throws -> EditedResponse<SessionInfo> {
        var request = request
        let buffer = try await request.collectBody(upTo: maxBodyBytes)
        let body = buffer.readableBytes == 0
            ? CreateSessionRequest()
            : try JSONDecoder().decode(CreateSessionRequest.self, from: Data(buffer.readableBytesView))
        let info = try await manager.create(try body.configuration())
        return EditedResponse(status: .created, response: info)
    }

    private func send(_ request: Request, _ context: BasicRequestContext) async throws -> EditedResponse<TurnAccepted> {
        var request = request
        let buffer = try await request.collectBody(upTo: maxBodyBytes)
        let body = try JSONDecoder().decode(SendMessageRequest.self, from: Data(buffer.readableBytesView))
        let session = try await session(context)
        if body.wait == true {
            let turn = try await session.sendAndWait(body.text)
            return EditedResponse(status: .ok, response: TurnAccepted(turn: turn, lastSeq: try await session.info().lastSeq))
        }
        let turn = try await session.send(body.text)
        return EditedResponse(status: .accepted, response: TurnAccepted(turn: turn, lastSeq: nil))
    }

    private func records(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try await session(context)
        let after = try Self.integer(request, "after") ?? 0
        let limit = try Self.integer(request, "limit").map { Int(min(max($0, 1), 10_000)) } ?? 1000
        let found = try log.records(session: session.id, after: after, limit: limit)
        let json = "{\"records\":[" + found.map(EventStream.json).joined(separator: ",") + "]}"
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: json)))
    }

    private func events(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try await session(context)
        // `Last-Event-ID` wins: it is what a reconnecting EventSource sends.
        let lastEventID = HTTPField.Name("Last-Event-ID").flatMap { request.headers[$0] }
        let after = try lastEventID.map { value -> Int64 in
            guard let seq = Int64(value) else { throw APIError(.badRequest, code: "invalidArgument", "Last-Event-ID must be a record number") }
            return seq
        } ?? Self.integer(request, "after") ?? 0
        let follow = request.uri.queryParameters["follow"].map { $0 != "false" && $0 != "0" } ?? true
        let log = self.log
        let id = session.id
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        let heartbeat = self.heartbeat
        let body = ResponseBody { writer in
            var last = after
            var quiet = Duration.zero
            let stopping = Mutex(false)
            // The stream ends when the server shuts down gracefully, and, through a failed
            // heartbeat write, when its client has gone: it must not hold the server open forever.
            try await withGracefulShutdownHandler {
                while !Task.isCancelled, !stopping.withLock({ $0 }) {
                    let slice = Duration.seconds(1)
                    let page = try await log.nextPage(session: id, after: last, waitingUpTo: follow ? slice : .zero)
                    guard let newest = page.last else {
                        if !follow { break }
                        quiet += slice
                        if quiet >= heartbeat {
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                            quiet = .zero
                        }
                        continue
                    }
                    quiet = .zero
                    try await writer.write(ByteBuffer(string: page.map(EventStream.event).joined()))
                    last = newest.seq
                }
            } onGracefulShutdown: {
                stopping.withLock { $0 = true }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }

    private static func integer(_ request: Request, _ name: String) throws -> Int64? {
        guard let text = request.uri.queryParameters[name[...]] else { return nil }
        guard let value = Int64(text), value >= 0 else {
            throw APIError(.badRequest, code: "invalidArgument", "query parameter \(name) must be a whole number ≥ 0, not '\(text)'")
        }
        return value
    }
}

/// The answer to `GET /v1/sessions`.
struct SessionList: ResponseEncodable, Decodable {
    let sessions: [SessionInfo]
}

/// The answer to `POST /v1/sessions/{id}/messages`.
public struct TurnAccepted: ResponseEncodable, Decodable, Sendable {
    /// The turn id: the user message record and the turn's `turnEnded` record carry it.
    public let turn: String
    /// With `wait`: the last record of the turn.
    public let lastSeq: Int64?
}

extension SessionInfo: ResponseEncodable {}
