import Foundation
import Testing

@testable import Models

@Suite("Scripted model")
struct ScriptedModelTests {
    static let allTools = ["shell", "read_file", "list_dir", "write_file"].map {
        ToolSpec(name: $0, description: "the \($0) tool", parameters: #"{"type":"object"}"#)
    }

    let model = ScriptedModel()

    /// The reply to `messages` with all four tools offered (or `tools`).
    func reply(_ messages: [ChatMessage], tools: [ToolSpec] = allTools) async throws -> ModelReply {
        try await model.complete(ModelRequest(messages: messages, tools: tools))
    }

    /// Runs a whole turn: answers each tool call with `result(call)` until the model replies with text.
    func runTurn(
        _ messages: [ChatMessage], tools: [ToolSpec] = allTools, result: (ToolCall) -> String
    ) async throws -> (calls: [ToolCall], final: ModelReply) {
        var messages = messages
        var calls: [ToolCall] = []
        for _ in 0..<20 {
            let reply = try await reply(messages, tools: tools)
            guard let call = reply.message.toolCalls.first else { return (calls, reply) }
            calls.append(call)
            messages.append(reply.message)
            messages.append(.toolResult(callID: call.id, content: result(call)))
        }
        Issue.record("the scripted model never stopped calling tools")
        return (calls, ModelReply(message: .assistant(""), stopReason: "", usage: nil))
    }

    @Test func withoutCommandsItEchoesTheUserMessage() async throws {
        let reply = try await reply([.system("be brief"), .user("hello there, machine")])
        #expect(reply.message.role == .assistant)
        #expect(reply.message.content == "You said: hello there, machine")
        #expect(reply.message.toolCalls.isEmpty)
        #expect(reply.stopReason == "end_turn")
    }

    @Test func aDollarLineIsAShellCall() async throws {
        let reply = try await reply([.user("$ ls -la /tmp")])
        #expect(reply.stopReason == "tool_use")
        #expect(reply.message.content == "")
        #expect(reply.message.toolCalls == [ToolCall(id: "call_1_0", name: "shell", arguments: #"{"command":"ls -la /tmp"}"#)])
    }

    @Test func readAndLsLinesCallTheirTools() async throws {
        let read = try await reply([.user("read /etc/os-release")])
        #expect(read.message.toolCalls == [ToolCall(id: "call_1_0", name: "read_file", arguments: #"{"path":"/etc/os-release"}"#)])
        let list = try await reply([.user("ls /var/log")])
        #expect(list.message.toolCalls == [ToolCall(id: "call_1_0", name: "list_dir", arguments: #"{"path":"/var/log"}"#)])
    }

    @Test func writeTakesTheLinesUpToEOFWithATrailingNewline() async throws {
        let reply = try await reply([.user("write /tmp/a b.txt\nfirst \"quoted\" line\n\tsecond\\line\nEOF\nnot content")])
        #expect(
            reply.message.toolCalls == [
                ToolCall(
                    id: "call_1_0", name: "write_file",
                    arguments: #"{"content":"first \"quoted\" line\n\tsecond\\line\n","path":"/tmp/a b.txt"}"#)
            ])
        let arguments = try #require(reply.message.toolCalls.first?.arguments)
        let decoded = try JSONDecoder().decode([String: String].self, from: Data(arguments.utf8))
        #expect(decoded == ["path": "/tmp/a b.txt", "content": "first \"quoted\" line\n\tsecond\\line\n"])
    }

    @Test func anUnterminatedWriteTakesTheRestOfTheMessage() async throws {
        let reply = try await reply([.user("write /tmp/x\none\ntwo")])
        #expect(reply.message.toolCalls.first?.arguments == #"{"content":"one\ntwo\n","path":"/tmp/x"}"#)
    }

    @Test func otherLinesAreNotCommands() async throws {
        let commands = ScriptedCommand.parse("please run this:\n$ pwd\n  $ indented\nreading is fun\nls\n$\nthanks\r\n$ date\r")
        #expect(commands.map(\.label) == ["$ pwd", "$ date"])
    }

    @Test func aMultiCommandTurnCallsOneToolAtATimeInOrder() async throws {
        let message = "Please do this:\n$ echo hi\nread /etc/hostname\nwrite /tmp/notes.txt\nfirst\nsecond\nEOF\nls /tmp\nthanks"
        let results = [
            "shell": "hi\n", "read_file": "stasis-vm\n", "write_file": "wrote 13 bytes", "list_dir": "notes.txt\nother.txt\n",
        ]
        let (calls, final) = try await runTurn([.system("sys"), .user(message)]) { results[$0.name] ?? "?" }
        #expect(calls.map(\.name) == ["shell", "read_file", "write_file", "list_dir"])
        #expect(calls.map(\.id) == ["call_1_0", "call_1_1", "call_1_2", "call_1_3"])
        #expect(calls[2].arguments == #"{"content":"first\nsecond\n","path":"/tmp/notes.txt"}"#)
        #expect(final.stopReason == "end_turn")
        #expect(final.message.toolCalls.isEmpty)
        #expect(
            final.message.content
                == "$ echo hi -> hi\nread /etc/hostname -> stasis-vm\nwrite /tmp/notes.txt -> wrote 13 bytes\n"
                + "ls /tmp -> notes.txt\n\nnotes.txt\nother.txt\n")
    }

    @Test func callIDsCountUserMessagesAndOnlyTheLastOneIsRead() async throws {
        let history: [ChatMessage] = [
            .user("$ echo one"),
            .assistant("", toolCalls: [ToolCall(id: "call_1_0", name: "shell", arguments: #"{"command":"echo one"}"#)]),
            .toolResult(callID: "call_1_0", content: "one"),
            .assistant("$ echo one -> one\n\none"),
            .user("read /a\nread /b"),
            .assistant("", toolCalls: [ToolCall(id: "call_2_0", name: "read_file", arguments: #"{"path":"/a"}"#)]),
            .toolResult(callID: "call_2_0", content: "A"),
        ]
        let reply = try await reply(history)
        #expect(reply.message.toolCalls == [ToolCall(id: "call_2_1", name: "read_file", arguments: #"{"path":"/b"}"#)])
    }

    @Test func aCommandWhoseToolIsNotOfferedIsSkipped() async throws {
        let readOnly = Self.allTools.filter { $0.name == "read_file" }
        let (calls, final) = try await runTurn([.user("$ rm -rf /\nread /etc/hostname\nls /")], tools: readOnly) { _ in "vm" }
        #expect(calls == [ToolCall(id: "call_1_0", name: "read_file", arguments: #"{"path":"/etc/hostname"}"#)])
        #expect(final.message.content == "read /etc/hostname -> vm\n\nvm")
    }

    @Test func withNoToolOfferedCommandsAreIgnored() async throws {
        let reply = try await reply([.user("$ ls")], tools: [])
        #expect(reply.message.content == "You said: $ ls")
        #expect(reply.stopReason == "end_turn")
    }

    @Test func theSummaryTruncatesFirstLinesAndTheLastResult() async throws {
        let long = String(repeating: "a", count: 300) + "\nsecond line"
        let huge = String(repeating: "b", count: 3000)
        let (_, final) = try await runTurn([.user("$ first\n$ second")]) { $0.arguments.contains("first") ? long : huge }
        let lines = final.message.content.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 4)
        #expect(lines[0] == "$ first -> " + String(repeating: "a", count: 200))
        #expect(lines[1] == "$ second -> " + String(repeating: "b", count: 200))
        #expect(lines[2] == "")
        #expect(lines[3] == String(repeating: "b", count: 2000))
    }

    @Test func theFinalTextStreamsInPiecesBeforeTheReply() async throws {
        let request = ModelRequest(messages: [.user("tell me about the machine")], tools: Self.allTools)
        let collected = try await CollectedStream(model.stream(request))
        let reply = try #require(collected.reply)
        #expect(collected.replyWasLast)
        #expect(collected.texts == ["You", " said:", " tell", " me", " about", " the", " machine"])
        #expect(collected.texts.joined() == reply.message.content)
    }

    @Test func aToolCallStreamsOnlyTheReply() async throws {
        let collected = try await CollectedStream(model.stream(ModelRequest(messages: [.user("$ pwd")], tools: Self.allTools)))
        #expect(collected.texts.isEmpty)
        #expect(collected.reply?.stopReason == "tool_use")
    }

    @Test func usageCountsWords() async throws {
        let reply = try await reply([.system("you are a test"), .user("hello big world")])
        // input: 4 + 3 words; output: "You said: hello big world" is 5 words.
        #expect(reply.usage == ModelUsage(inputTokens: 7, outputTokens: 5))
    }

    @Test func theSameRequestGetsTheSameReply() async throws {
        let messages: [ChatMessage] = [.user("$ uname -a\nread /proc/version")]
        let first = try await runTurn(messages) { "result of \($0.name)" }
        let second = try await runTurn(messages) { "result of \($0.name)" }
        #expect(first.calls == second.calls)
        #expect(first.final == second.final)
        let request = ModelRequest(messages: [.user("same words every time")], tools: [])
        let streamA = try await CollectedStream(model.stream(request))
        let streamB = try await CollectedStream(model.stream(request))
        #expect(streamA.texts == streamB.texts)
        #expect(streamA.replies == streamB.replies)
    }

    @Test func describesItself() {
        #expect(model.description == "scripted")
    }
}
