import StasisCore
import Testing

@testable import Models

@Suite("Anthropic provider")
struct AnthropicModelTests {
    static let key = APIKey("sk-ant-test-stasis-fedcba9876543210")
    static let readFile = ToolSpec(
        name: "read_file", description: "Read a file.",
        parameters: #"{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}"#)

    static func model(_ server: FixtureServer) -> AnthropicModel {
        AnthropicModel(baseURL: server.baseURL, model: "claude-sonnet-4-5", apiKey: key)
    }

    @Test(arguments: [nil, 1])
    func streamsTextInOrder(chunkSize: Int?) async throws {
        try await FixtureServer.with(fixture: "anthropic-text", chunkSize: chunkSize) { server in
            let request = ModelRequest(
                messages: [.system("You are terse."), .system("Answer in English."), .user("What runs here?")], tools: [])
            let collected = try await CollectedStream(Self.model(server).stream(request))

            #expect(collected.texts == ["Hello", "! The machine", " runs Debian", " 12.", " Café ☕", " is open."])
            #expect(collected.replyWasLast)
            let reply = try #require(collected.reply)
            #expect(reply.message == .assistant("Hello! The machine runs Debian 12. Café ☕ is open."))
            #expect(reply.stopReason == "end_turn")
            #expect(reply.usage == ModelUsage(inputTokens: 25, outputTokens: 15))

            let sent = try #require(server.requests.first)
            #expect(sent.header("x-api-key") == Self.key.secret)
            #expect(sent.header("anthropic-version") == "2023-06-01")
            #expect(sent.header("content-type") == "application/json")
            #expect(sent.header("authorization") == nil)
            let body = try sent.json()
            #expect(body["model"] == "claude-sonnet-4-5")
            #expect(body["max_tokens"] == 4096)
            #expect(body["stream"] == true)
            #expect(body["system"] == "You are terse.\n\nAnswer in English.")
            #expect(body["messages"] == [["role": "user", "content": "What runs here?"]])
        }
    }

    @Test func assemblesAToolUseAndMapsToolResults() async throws {
        try await FixtureServer.with(fixture: "anthropic-tool-call") { server in
            let messages: [ChatMessage] = [
                .user("Look around."),
                .assistant(
                    "Two things first.",
                    toolCalls: [
                        ToolCall(id: "toolu_earlier_1", name: "read_file", arguments: #"{"path":"/etc/hostname"}"#),
                        ToolCall(id: "toolu_earlier_2", name: "read_file", arguments: #"{"path":"/etc/"#),
                    ]),
                .toolResult(callID: "toolu_earlier_1", content: "vm\n"),
                .toolResult(callID: "toolu_earlier_2", content: "error: invalid arguments"),
                .user("Now the OS."),
            ]
            let request = ModelRequest(messages: messages, tools: [Self.readFile], maxTokens: 1000)
            let collected = try await CollectedStream(Self.model(server).stream(request))

            #expect(collected.texts == ["Okay", ", let", "'s read", " that file."])
            let reply = try #require(collected.reply)
            #expect(reply.stopReason == "tool_use")
            #expect(reply.message.content == "Okay, let's read that file.")
            #expect(
                reply.message.toolCalls == [
                    ToolCall(id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", name: "read_file", arguments: #"{"path": "/etc/os-release"}"#)
                ])
            #expect(reply.usage == ModelUsage(inputTokens: 472, outputTokens: 89))

            let body = try #require(try server.requests.first?.json())
            #expect(body["max_tokens"] == 1000)
            #expect(body["system"] == nil)
            #expect(
                body["tools"]
                    == [
                        [
                            "name": "read_file", "description": "Read a file.",
                            "input_schema": [
                                "type": "object", "properties": ["path": ["type": "string"]], "required": ["path"],
                            ],
                        ]
                    ])
            #expect(
                body["messages"]
                    == [
                        ["role": "user", "content": "Look around."],
                        [
                            "role": "assistant",
                            "content": [
                                ["type": "text", "text": "Two things first."],
                                [
                                    "type": "tool_use", "id": "toolu_earlier_1", "name": "read_file",
                                    "input": ["path": "/etc/hostname"],
                                ],
                                // Arguments that are not an object go as an empty input.
                                ["type": "tool_use", "id": "toolu_earlier_2", "name": "read_file", "input": [:]],
                            ],
                        ],
                        [
                            "role": "user",
                            "content": [
                                ["type": "tool_result", "tool_use_id": "toolu_earlier_1", "content": "vm\n"],
                                [
                                    "type": "tool_result", "tool_use_id": "toolu_earlier_2",
                                    "content": "error: invalid arguments",
                                ],
                            ],
                        ],
                        ["role": "user", "content": "Now the OS."],
                    ])
        }
    }

    @Test func a401BecomesAClearErrorWithoutTheKey() async throws {
        try await FixtureServer.with(fixture: "anthropic-error-401") { server in
            let error = try await #require(throws: StasisError.self) {
                try await Self.model(server).complete(ModelRequest(messages: [.user("hi")], tools: []))
            }
            #expect(error.code == .protocolError)
            #expect(error.message.contains("401"))
            #expect(error.message.contains("invalid x-api-key (authentication_error)"))
            #expect(!"\(error)".contains(Self.key.secret))
        }
    }

    @Test func a400CarriesTheAPIsMessage() async throws {
        try await FixtureServer.with(fixture: "anthropic-error-400") { server in
            let error = try await #require(throws: StasisError.self) {
                try await Self.model(server).complete(ModelRequest(messages: [.user("hi")], tools: []))
            }
            #expect(error.code == .protocolError)
            #expect(error.message.contains("400"))
            #expect(error.message.contains("messages.1.content.0.type: Expected `thinking`"))
        }
    }

    @Test func anErrorEventMidStreamFailsTheStreamAfterItsText() async throws {
        try await FixtureServer.with(fixture: "anthropic-overloaded") { server in
            var texts: [String] = []
            let error = try await #require(throws: StasisError.self) {
                for try await event in Self.model(server).stream(ModelRequest(messages: [.user("hi")], tools: [])) {
                    if case .text(let piece) = event { texts.append(piece) }
                    if case .reply = event { Issue.record("a reply after an error event") }
                }
            }
            #expect(texts == ["Let me"])
            #expect(error.code == .protocolError)
            #expect(error.message.contains("Overloaded (overloaded_error)"))
        }
    }

    @Test func aStreamCutShortIsAnError() throws {
        var decoder = AnthropicStreamDecoder()
        _ = try decoder.consume(ServerSentEvent(event: "message_start", data: #"{"type":"message_start","message":{"usage":{"input_tokens":3}}}"#))
        #expect(throws: StasisError.self) { try decoder.reply() }
    }

    @Test func describesItself() {
        let model = AnthropicModel(model: "claude-haiku-4-5", apiKey: Self.key)
        #expect(model.description == "anthropic:claude-haiku-4-5 at https://api.anthropic.com")
        #expect(!model.description.contains(Self.key.secret))
    }
}
