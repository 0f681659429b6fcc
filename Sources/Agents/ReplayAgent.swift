import Models
import Replay

/// The agent loop of a session (model call → tool calls → results, until the model answers
/// without a tool call) written as a Replay workflow instead of a session: every model call and
/// every tool call is a journaled step. After a crash the workflow re-runs from the top; journaled
/// steps return their results without calling the model or running the tool again, so the
/// transcript is rebuilt from the journal and the loop goes on where it stopped.
///
/// This is the other road to a durable agent next to `Session` (a context log plus a machine
/// snapshot). It keeps no machine: the tools are a function the caller supplies, and whatever
/// state they leave behind (files, processes) is not part of the journal. docs/replay.md has the
/// comparison; `stasis-bench replay-vs-snapshot` measures both.
public struct ReplayAgent: Sendable {
    /// Runs one tool call and returns its result. It runs once per call, or again after a crash
    /// that came between its end and its journal write (steps are at-least-once).
    public typealias ToolFunction = @Sendable (ToolCall) async throws -> ToolResultBody

    /// The model asked for every reply.
    public let model: any ModelProvider
    /// The tools the model is offered.
    public let tools: [ToolSpec]
    /// Runs the tool calls.
    public let runTool: ToolFunction
    /// Sent first on every model call.
    public let systemPrompt: String
    /// How many of the latest turns the model is shown (nil: the whole transcript). The workflow
    /// keeps the whole transcript either way; a window bounds what one request carries.
    public let contextTurns: Int?
    /// A turn stops after this many model calls, as a session's does.
    public let maxModelCallsPerTurn: Int

    /// Creates an agent. `tools` defaults to a session's tools (shell, read_file, write_file, list_dir).
    public init(model: any ModelProvider, tools: [ToolSpec]? = nil, systemPrompt: String = SessionConfiguration.defaultSystemPrompt,
                contextTurns: Int? = nil, maxModelCallsPerTurn: Int = 32, runTool: @escaping ToolFunction) {
        self.model = model
        self.tools = tools ?? ToolRunner.specs
        self.runTool = runTool
        self.systemPrompt = systemPrompt
        self.contextTurns = contextTurns
        self.maxModelCallsPerTurn = maxModelCallsPerTurn
    }

    /// Registers the loop with `engine` as workflow `name`: input `ReplayAgentInput`, output `ReplayAgentOutput`.
    public func register(on engine: WorkflowEngine, as name: String) async {
        await engine.register(name) { (ctx: WorkflowContext, input: ReplayAgentInput) in
            try await run(ctx, input)
        }
    }

    /// The workflow body. Steps are named `model-<turn>-<call>` and `tool-<turn>-<call>`, each
    /// numbered from 1 within its turn, so a journal can be read without the code.
    public func run(_ ctx: WorkflowContext, _ input: ReplayAgentInput) async throws -> ReplayAgentOutput {
        var transcript: [ChatMessage] = []
        var turnStarts: [Int] = []
        var modelCalls = 0
        var toolCalls = 0
        var lastReply = ""
        let model = self.model, tools = self.tools, systemPrompt = self.systemPrompt, runTool = self.runTool
        for (index, text) in input.messages.enumerated() {
            let turn = index + 1
            turnStarts.append(transcript.count)
            transcript.append(.user(text))
            var toolsThisTurn = 0
            for call in 1 ... max(1, maxModelCallsPerTurn) {
                // The request is built inside the step: on re-execution a journaled step never
                // runs its body, so replaying a turn costs no copy of the transcript. The capture
                // ends with the step, so the append below does not copy the transcript either.
                let start = contextTurns.map { turnStarts[max(0, turnStarts.count - max(1, $0))] } ?? 0
                let reply = try await ctx.step("model-\(turn)-\(call)") { [transcript] in
                    try await model.complete(ModelRequest(messages: [.system(systemPrompt)] + transcript[start...], tools: tools))
                }
                modelCalls += 1
                transcript.append(reply.message)
                if reply.message.toolCalls.isEmpty {
                    lastReply = reply.message.content
                    break
                }
                for toolCall in reply.message.toolCalls {
                    toolsThisTurn += 1
                    let result = try await ctx.step("tool-\(turn)-\(toolsThisTurn)") { try await runTool(toolCall) }
                    toolCalls += 1
                    transcript.append(.toolResult(callID: toolCall.id, content: result.content))
                }
            }
        }
        return ReplayAgentOutput(turns: input.messages.count, modelCalls: modelCalls, toolCalls: toolCalls,
                                 transcriptMessages: transcript.count, lastReply: lastReply)
    }
}
