import Agents
import AsyncHTTPClient
import Context
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Server
import StasisCore
import Testing

/// A `StasisServer` in this process on a free port.
struct RunningServer {
    let url: String
    let token: String
    let harness: SessionHarness
    let task: Task<Void, any Error>

    static func start() async throws -> RunningServer {
        let harness = try await SessionHarness.make()
        let token = "test-token-\(UUID().uuidString)"
        let server = StasisServer(manager: harness.manager, token: token, port: 0, maxBodyBytes: 64 * 1024, logger: Logger(label: "test"))
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let task = Task { try await server.run { port in continuation.yield(port) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw StasisError(.internalError, "the server did not start") }
        return RunningServer(url: "http://127.0.0.1:\(port)", token: token, harness: harness, task: task)
    }

    /// What a request sends as its credentials.
    enum Credentials { case valid, missing, token(String) }

    /// One raw request: status and body text.
    func request(_ method: HTTPMethod, _ path: String, auth: Credentials = .valid, body: String? = nil,
                 headers: [(String, String)] = []) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url + path)
        request.method = method
        switch auth {
        case .valid: request.headers.add(name: "Authorization", value: "Bearer \(token)")
        case .token(let other): request.headers.add(name: "Authorization", value: "Bearer \(other)")
        case .missing: break
        }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), String(buffer: bytes))
    }

    func errorCode(_ body: String) -> String? {
        (try? JSONDecoder().decode(ErrorAnswer.self, from: Data(body.utf8)))?.error.code
    }

    struct ErrorAnswer: Decodable {
        struct Detail: Decodable { let code: String; let message: String }
        let error: Detail
    }
}

@Suite("HTTP API", .serialized, .timeLimit(.minutes(5)))
struct ServerTests {
    @Test func everyCallNeedsTheBearerToken() async throws {
        let server = try await RunningServer.start()
        defer { server.task.cancel() }
        let missing = try await server.request(.GET, "/v1/sessions", auth: .missing)
        #expect(missing.status == 401)
        #expect(server.errorCode(missing.body) == "unauthorized")
        let wrong = try await server.request(.GET, "/v1/sessions", auth: .token("not-the-token"))
        #expect(wrong.status == 401)
        #expect(try await server.request(.GET, "/v1/sessions").status == 200)
    }

    @Test func badRequestsGetClearJSONErrors() async throws {
        let server = try await RunningServer.start()
        defer { server.task.cancel() }
        let tooBig = try await server.request(.POST, "/v1/sessions", body: "{\"systemPrompt\":\"" + String(repeating: "x", count: 100_000) + "\"}")
        #expect(tooBig.status == 413)
        #expect(server.errorCode(tooBig.body) == "tooLarge")
        let malformed = try await server.request(.POST, "/v1/sessions", body: "{not json")
        #expect(malformed.status == 400)
        let wrongType = try await server.request(.POST, "/v1/sessions", body: #"{"cpus":"two"}"#)
        #expect(wrongType.status == 400)
        #expect(wrongType.body.contains("cpus"))
        let unknownImage = try await server.request(.POST, "/v1/sessions", body: #"{"image":"no-such-image"}"#)
        #expect(unknownImage.status == 404)
        #expect(unknownImage.body.contains("no-such-image"))
        let badModel = try await server.request(.POST, "/v1/sessions", body: #"{"image":"bb","model":{"provider":"telepathy"}}"#)
        #expect(badModel.status == 400)
        let noSession = try await server.request(.GET, "/v1/sessions/ffffffffffff")
        #expect(noSession.status == 404)
        #expect(server.errorCode(noSession.body) == "notFound")
        let emptyMessage = try await server.request(.POST, "/v1/sessions/ffffffffffff/messages", body: #"{"text":"hi"}"#)
        #expect(emptyMessage.status == 404)
        let badAfter = try await server.request(.GET, "/v1/sessions/ffffffffffff/records?after=-1")
        #expect(badAfter.status == 400 || badAfter.status == 404)
    }

    @Test func eventsResumeFromASequenceNumber() async throws {
        let server = try await RunningServer.start()
        defer { server.task.cancel() }
        let created = try await server.request(.POST, "/v1/sessions", body: #"{"image":"bb","memory":"256M"}"#)
        #expect(created.status == 201)
        let info = try JSONDecoder().decode(SessionInfo.self, from: Data(created.body.utf8))
        // Records appended straight to the log (no machine needed to read them back).
        for i in 1 ... 4 {
            try await server.harness.log.append(NewRecord(
                session: info.id, kind: .userMessage, value: UserMessageBody(text: "m\(i)", turn: "t\(i)")))
        }
        let page = try await server.request(.GET, "/v1/sessions/\(info.id)/events?after=2&follow=false")
        #expect(page.status == 200)
        #expect(Self.ids(page.body) == [3, 4, 5])
        let resumed = try await server.request(.GET, "/v1/sessions/\(info.id)/events?follow=false", headers: [("Last-Event-ID", "4")])
        #expect(Self.ids(resumed.body) == [5])
        #expect(resumed.body.contains(#""text":"m4""#))

        // A follower sees a record appended after it connected.
        let client = StasisClient(baseURL: server.url, token: server.token)
        var events = client.events(info.id, after: 5).makeAsyncIterator()
        try await server.harness.log.append(NewRecord(
            session: info.id, kind: .userMessage, value: UserMessageBody(text: "late", turn: "t5")))
        let late = try await events.next()
        #expect(late?.seq == 6)
        #expect(try late?.decodeBody(UserMessageBody.self).text == "late")

        let records = try await server.request(.GET, "/v1/sessions/\(info.id)/records?after=4&limit=1")
        #expect(records.body.contains(#""seq":5"#))
        #expect(!records.body.contains(#""seq":6"#))
        #expect(try await server.request(.DELETE, "/v1/sessions/\(info.id)").status == 204)
        #expect(try await server.request(.GET, "/v1/sessions/\(info.id)").status == 404)
    }

    @Test func theOpenAPIDocumentMatchesTheServer() async throws {
        let harness = try await SessionHarness.make()
        let server = StasisServer(manager: harness.manager, token: "x", logger: Logger(label: "test"))
        let document = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/openapi.yaml")
        let text = try String(contentsOf: document, encoding: .utf8)
        var documented: [String] = []
        var path: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("  /"), line.hasSuffix(":") { path = String(line.dropFirst(2).dropLast()); continue }
            if !line.hasPrefix(" ") { path = nil }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if let path, line.hasPrefix("    "), !line.hasPrefix("     "),
               ["get:", "post:", "put:", "delete:", "patch:"].contains(trimmed) {
                documented.append("\(trimmed.dropLast().uppercased()) \(path)")
            }
        }
        #expect(documented.sorted() == server.routeList())
    }

    static func ids(_ stream: String) -> [Int] {
        stream.split(separator: "\n").filter { $0.hasPrefix("id: ") }.compactMap { Int($0.dropFirst(4)) }
    }
}
