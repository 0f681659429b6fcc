/// A deterministic model for tests and demos, with no network: it runs the commands written in
/// the last user message one tool call at a time, then summarizes their results. The rules are
/// in docs/models.md.
public struct ScriptedModel: ModelProvider {
    /// The longest first line of a result quoted in the summary.
    static let summaryLineLimit = 200
    /// The longest last result quoted in full in the summary.
    static let lastResultLimit = 2000

    /// Creates the scripted model.
    public init() {}

    public var description: String { "scripted" }

    public func stream(_ request: ModelRequest) -> AsyncThrowingStream<ModelEvent, any Error> {
        let reply = reply(to: request)
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: ModelEvent.self)
        for piece in Self.pieces(of: reply.message.content) { continuation.yield(.text(piece)) }
        continuation.yield(.reply(reply))
        continuation.finish()
        return stream
    }

    /// The reply to `request`, computed at once.
    func reply(to request: ModelRequest) -> ModelReply {
        let lastUser = request.messages.lastIndex { $0.role == .user }
        let userMessage = lastUser.map { request.messages[$0].content } ?? ""
        let userCount = request.messages.count { $0.role == .user }
        let after = lastUser.map { request.messages[($0 + 1)...] } ?? request.messages[...]
        let results = after.filter { $0.role == .tool }
        let offered = Set(request.tools.map(\.name))
        let commands = ScriptedCommand.parse(userMessage).filter { offered.contains($0.tool) }
        let inputTokens = request.messages.reduce(0) { $0 + Self.wordCount($1.content) }

        if results.count < commands.count {
            let command = commands[results.count]
            let call = ToolCall(id: "call_\(userCount)_\(results.count)", name: command.tool, arguments: command.arguments)
            return ModelReply(
                message: .assistant("", toolCalls: [call]), stopReason: "tool_use",
                usage: ModelUsage(inputTokens: inputTokens, outputTokens: Self.wordCount(call.arguments)))
        }
        let text: String
        if commands.isEmpty {
            text = "You said: \(userMessage)"
        } else {
            var lines = zip(commands, results).map { command, result in
                let firstLine = ScriptedCommand.lines(of: result.content).first ?? ""
                return "\(command.label) -> \(firstLine.prefix(Self.summaryLineLimit))"
            }
            lines.append("")
            lines.append(String((results.last?.content ?? "").prefix(Self.lastResultLimit)))
            text = lines.joined(separator: "\n")
        }
        return ModelReply(
            message: .assistant(text), stopReason: "end_turn",
            usage: ModelUsage(inputTokens: inputTokens, outputTokens: Self.wordCount(text)))
    }

    /// `text` cut before each space, so that the pieces joined give `text` back.
    static func pieces(of text: String) -> [String] {
        var pieces: [String] = []
        var current = ""
        for character in text {
            if character == " ", !current.isEmpty {
                pieces.append(current)
                current = ""
            }
            current.append(character)
        }
        if !current.isEmpty { pieces.append(current) }
        return pieces
    }

    /// Words separated by whitespace: the scripted model's idea of a token.
    static func wordCount(_ text: String) -> Int {
        text.split(whereSeparator: \.isWhitespace).count
    }
}
