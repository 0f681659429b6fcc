import Foundation
import NIOCore
import StasisCore
import Testing

@testable import Models

@Suite("OpenAI-compatible provider")
struct OpenAIChatModelTests {
    static let key = APIKey("sk-test-stasis-0123456789abcdef")
    static let tools = [
        ToolSpec(
            name: "shell", description: "Run a shell command in the machine.",
            parameters: #"{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}"#),
        ToolSpec(
            name: "read_file", description: "Read a file.",
            parameters: #"{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}"#),
    ]

    static func model(_ server: FixtureServer, key: APIKey? = key) -> OpenAIChatModel {
        OpenAIChatModel(baseURL: server.baseURL + "/v1", model: "gpt-4o-mini", apiKey: key)
    }

    @Test func streamsTextInOrder() async throws {
        try await FixtureServer.with(fixture: "openai-text") { server in
            let request = ModelRequest(messages: [.system("You are terse."), .user("What runs here?")], tools: [], maxTokens: 300)
            let collected = try await CollectedStream(Self.model(server).stream(request))

            let expectedPieces = [
                "The", " machine", " runs", " Debian", " 12", " (", "book", "worm", ").", " Café", " ☕", " is", " open.",
            ]
            #expect(collected.texts == expectedPieces)
            #expect(collected.replyWasLast)
            let reply = try #require(collected.reply)
            #expect(reply.message == .assistant("The machine runs Debian 12 (bookworm). Café ☕ is open."))
            #expect(reply.stopReason == "end_turn")
            #expect(reply.usage == ModelUsage(inputTokens: 42, outputTokens: 14))

            let sent = try #require(server.requests.first)
            #expect(sent.header("authorization") == "Bearer sk-test-stasis-0123456789abcdef")
            #expect(sent.header("content-type") == "application/json")
            let body = try sent.json()
            #expect(body["model"] == "gpt-4o-mini")
            #expect(body["stream"] == true)
            #expect(body["stream_options"] == ["include_usage": true])
            #expect(body["max_tokens"] == 300)
            #expect(body["tools"] == nil)
            #expect(
                body["messages"]
                    == [["role": "system", "content": "You are terse."], ["role": "user", "content": "What runs here?"]])
        }
    }

    @Test(arguments: [nil, 1, 7])
    func assemblesToolCallsFromFragments(chunkSize: Int?) async throws {
        try await FixtureServer.with(fixture: "openai-tool-call", chunkSize: chunkSize) { server in
            let messages: [ChatMessage] = [
                .user("Look around."),
                .assistant("Checking.", toolCalls: [ToolCall(id: "call_earlier_1", name: "shell", arguments: #"{"command":"pwd"}"#)]),
                .toolResult(callID: "call_earlier_1", content: "/root\n"),
            ]
            let reply = try await Self.model(server).complete(ModelRequest(messages: messages, tools: Self.tools))

            #expect(reply.stopReason == "tool_use")
            #expect(reply.message.content == "")
            #expect(
                reply.message.toolCalls == [
                    ToolCall(id: "call_Vb3bN8mXq0cJ2HkR5tLwP9sD", name: "shell", arguments: #"{"command":"ls -la /tmp"}"#),
                    ToolCall(id: "call_Q8wE2rT5yU7iO9pA1sD3fG4h", name: "read_file", arguments: #"{"path":"/etc/os-release"}"#),
                ])
            #expect(reply.usage == ModelUsage(inputTokens: 187, outputTokens: 51))

            let body = try #require(try server.requests.first?.json())
            #expect(
                body["tools"]?[0]
                    == [
                        "type": "function",
                        "function": [
                            "name": "shell", "description": "Run a shell command in the machine.",
                            "parameters": [
                                "type": "object", "properties": ["command": ["type": "string"]], "required": ["command"],
                            ],
                        ],
                    ])
            #expect(body["tools"]?.arrayValue?.count == 2)
            #expect(
                body["messages"]?[1]
                    == [
                        "role": "assistant", "content": "Checking.",
                        "tool_calls": [
                            ["id": "call_earlier_1", "type": "function", "function": ["name": "shell", "arguments": #"{"command":"pwd"}"#]]
                        ],
                    ])
            #expect(body["messages"]?[2] == ["role": "tool", "tool_call_id": "call_earlier_1", "content": "/root\n"])
        }
    }

    @Test func anAssistantTurnOfOnlyToolCallsHasNullContent() throws {
        let model = OpenAIChatModel(baseURL: "http://127.0.0.1:1/v1", model: "m", apiKey: nil)
        let call = ToolCall(id: "c1", name: "shell", arguments: "{}")
        let body = try model.requestBody(ModelRequest(messages: [.assistant("", toolCalls: [call])], tools: []))
        #expect(body["messages"]?[0]?["content"] == .null)
    }

    @Test func withoutAKeyNoAuthorizationIsSent() async throws {
        try await FixtureServer.with(fixture: "openai-text") { server in
            _ = try await Self.model(server, key: nil).complete(ModelRequest(messages: [.user("hi")], tools: []))
            let sent = try #require(server.requests.first)
            #expect(sent.header("authorization") == nil)
        }
    }

    @Test func a401BecomesAClearErrorWithoutTheKey() async throws {
        try await FixtureServer.with(fixture: "openai-error-401") { server in
            let error = try await #require(throws: StasisError.self) {
                try await Self.model(server).complete(ModelRequest(messages: [.user("hi")], tools: []))
            }
            #expect(error.code == .protocolError)
            #expect(error.message.contains("401"))
            #expect(error.message.contains("Incorrect API key provided"))
            #expect(error.message.contains(server.baseURL + "/v1/chat/completions"))
            #expect(!"\(error)".contains(Self.key.secret))
        }
    }

    @Test func aKeyEchoedByTheServerIsRedacted() async throws {
        try await FixtureServer.with(fixture: "openai-error-400-echo") { server in
            let error = try await #require(throws: StasisError.self) {
                try await Self.model(server).complete(ModelRequest(messages: [.user("hi")], tools: []))
            }
            #expect(error.message.contains("400"))
            #expect(error.message.contains("key <redacted> is not allowed to use model gpt-4o-mini"))
            #expect(!"\(error)".contains(Self.key.secret))
        }
    }

    @Test func aRequestTheFixtureDoesNotExpectFails() async throws {
        try await FixtureServer.with(fixture: "openai-tool-call") { server in
            // No tools and no tool results: the fixture's mustContain strings are missing.
            let error = try await #require(throws: StasisError.self) {
                try await Self.model(server).complete(ModelRequest(messages: [.user("hi")], tools: []))
            }
            #expect(error.message.contains("fixture mismatch"))
        }
    }

    @Test func anUnreachableServerIsAnIOFailureNamingTheURL() async throws {
        // A port bound but not listening refuses connections, and stays ours for the whole test:
        // a server's port freed at shutdown could be taken by another test's server meanwhile.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        #expect(bound)
        let url = "http://127.0.0.1:\(UInt16(bigEndian: address.sin_port))/v1"
        var model = OpenAIChatModel(baseURL: url, model: "gpt-4o-mini", apiKey: Self.key)
        // AHC retries a refused connection until the deadline, then reports why it failed.
        model.responseTimeout = .milliseconds(300)
        let error = try await #require(throws: StasisError.self) {
            try await model.complete(ModelRequest(messages: [.user("hi")], tools: []))
        }
        #expect(error.code == .ioFailure)
        #expect(error.message.contains(url + "/chat/completions"))
        #expect(!"\(error)".contains(Self.key.secret))
    }

    @Test(.timeLimit(.minutes(1)))
    func droppingTheStreamCancelsTheRequest() async throws {
        try await FixtureServer.with(fixture: "openai-held-open") { server in
            var closed = server.closedConnections.makeAsyncIterator()
            do {
                let stream = Self.model(server).stream(ModelRequest(messages: [.user("think")], tools: []))
                var received: [String] = []
                for try await event in stream {
                    if case .text(let piece) = event { received.append(piece) }
                    if received.count == 2 { break }
                }
                #expect(received == ["Thinking", " about"])
            }
            // The server never ends its answer: only the client's cancellation closes the connection.
            await closed.next()
            #expect(server.requests.count == 1)
        }
    }

    @Test func describesItself() {
        let model = OpenAIChatModel(baseURL: "http://127.0.0.1:11434/v1/", model: "qwen3:8b", apiKey: Self.key)
        #expect(model.description == "openai:qwen3:8b at http://127.0.0.1:11434/v1")
    }

    @Test func anInvalidToolSchemaFailsTheStream() async throws {
        let model = OpenAIChatModel(baseURL: "http://127.0.0.1:1/v1", model: "m", apiKey: nil)
        let bad = ToolSpec(name: "broken", description: "", parameters: "[1, 2")
        let error = try await #require(throws: StasisError.self) {
            try await model.complete(ModelRequest(messages: [.user("hi")], tools: [bad]))
        }
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains("broken"))
    }
}
