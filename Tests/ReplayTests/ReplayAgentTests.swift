import Agents
import Foundation
import Models
import Replay
import Testing

/// The agent loop as a Replay workflow: interrupted mid-turn, resumed by a fresh engine on the
/// same journal, it takes the journaled model replies and tool results instead of calling again,
/// and ends exactly as an uninterrupted run does.
@Suite struct ReplayAgentTests {
    static let messages = [
        "Set things up:\n$ mkdir -p /work\nwrite /work/notes.txt\nhello\nEOF",
        "$ echo one\n$ echo two",
        "read /work/notes.txt\n$ wc -c /work/notes.txt",
        "Thanks, that is all.",
    ]

    /// Counts the calls that really reach the model and the tool, and interrupts a given tool call once.
    final class Probe: Sendable {
        let modelCalls = Shared<[String]>([])
        let toolCalls = Shared<[String]>([])
        /// The tool call id whose first run is interrupted (as a kill would cut it), if any.
        let interruptAt: String?
        let interrupted = Shared(false)

        init(interruptAt: String? = nil) { self.interruptAt = interruptAt }

        func agent() -> ReplayAgent {
            ReplayAgent(model: CountingModel(probe: self), systemPrompt: "test", contextTurns: nil) { [self] call in
                if call.id == interruptAt, !interrupted.update({ let was = $0; $0 = true; return was }) {
                    throw CancellationError()
                }
                toolCalls.update { $0.append(call.id) }
                return ToolResultBody(id: call.id, name: call.name, content: "ran \(call.name) \(call.arguments)")
            }
        }
    }

    /// The scripted model, recording each request it answers by its last user message.
    struct CountingModel: ModelProvider {
        let probe: Probe
        var description: String { "counting scripted" }

        func stream(_ request: ModelRequest) -> AsyncThrowingStream<ModelEvent, any Error> {
            let last = request.messages.last { $0.role == .user }?.content ?? ""
            probe.modelCalls.update { $0.append(last) }
            return ScriptedModel().stream(request)
        }
    }

    private func engine(_ db: URL, _ probe: Probe) async throws -> WorkflowEngine {
        let engine = try WorkflowEngine(databaseURL: db)
        await probe.agent().register(on: engine, as: "agent")
        return engine
    }

    @Test func resumedAgentTakesJournaledRepliesAndEndsIdentically() async throws {
        let input = ReplayAgentInput(messages: Self.messages)

        // Uninterrupted.
        let straightDB = temporaryDatabase()
        let straight = Probe()
        let expected = try await engine(straightDB, straight).run("agent", id: "a", input: input, as: ReplayAgentOutput.self)
        let expectedHistory = try await engine(straightDB, Probe()).history(of: "a")
        #expect(expected.turns == 4)
        #expect(expected.toolCalls == 6)
        #expect(expected.modelCalls == 10)  // one per tool call, plus one summary per turn
        #expect(straight.toolCalls.current.count == 6)
        #expect(expectedHistory.map(\.step).prefix(4) == ["model-1-1", "tool-1-1", "model-1-2", "tool-1-2"])
        #expect(expected.lastReply == "You said: Thanks, that is all.")

        // Interrupted in turn 3's second tool call (`$ wc -c`), after its first one was journaled.
        let db = temporaryDatabase()
        let first = Probe(interruptAt: "call_3_1")
        await #expect(throws: CancellationError.self) {
            _ = try await engine(db, first).run("agent", id: "a", input: input, as: ReplayAgentOutput.self)
        }
        let beforeResume = try await engine(db, Probe()).history(of: "a")
        #expect(try await engine(db, Probe()).status(of: "a")?.status == .running)
        #expect(beforeResume.last?.step == "model-3-2")  // asked for `wc`; the tool never returned

        // A fresh engine on the same journal, as a new process after a kill.
        let second = Probe()
        let resumedEngine = try await engine(db, second)
        let report = try await resumedEngine.resumeUnfinished()
        #expect(report.completed == ["a"])
        let output = try await resumedEngine.run("agent", id: "a", input: input, as: ReplayAgentOutput.self)
        #expect(output == expected)

        // Nothing journaled ran again: the model was asked only from the cut call on, and only
        // the cut tool call and the ones after it ran.
        #expect(second.modelCalls.current == [Self.messages[2], Self.messages[3]])
        #expect(second.toolCalls.current == ["call_3_1"])
        #expect(first.toolCalls.current.count + second.toolCalls.current.count == 6)

        // Identical journal: same steps, same results.
        let history = try await resumedEngine.history(of: "a")
        #expect(history.map(\.step) == expectedHistory.map(\.step))
        #expect(history.map(\.payload) == expectedHistory.map(\.payload))
        try? FileManager.default.removeItem(at: straightDB.deletingLastPathComponent())
        try? FileManager.default.removeItem(at: db.deletingLastPathComponent())
    }

    @Test func contextWindowLimitsWhatTheModelIsShown() async throws {
        let db = temporaryDatabase()
        let shown = Shared<[Int]>([])
        struct WindowModel: ModelProvider {
            let shown: Shared<[Int]>
            var description: String { "window probe" }
            func stream(_ request: ModelRequest) -> AsyncThrowingStream<ModelEvent, any Error> {
                shown.update { $0.append(request.messages.count { $0.role == .user }) }
                return ScriptedModel().stream(request)
            }
        }
        let agent = ReplayAgent(model: WindowModel(shown: shown), contextTurns: 2) { call in
            ToolResultBody(id: call.id, name: call.name, content: "ok")
        }
        let engine = try WorkflowEngine(databaseURL: db)
        await agent.register(on: engine, as: "agent")
        let output = try await engine.run("agent", id: "w", input: ReplayAgentInput(messages: ["a", "b", "c", "$ true"]),
                                          as: ReplayAgentOutput.self)
        #expect(output.modelCalls == 5)
        #expect(output.transcriptMessages == 10)
        #expect(shown.current == [1, 2, 2, 2, 2])
        try? FileManager.default.removeItem(at: db.deletingLastPathComponent())
    }
}
