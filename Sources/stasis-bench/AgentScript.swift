import Agents
import Foundation
import Models
import StasisCore

/// The deterministic conversation of `stasis-bench replay-vs-snapshot`, the same on both roads
/// and in scripts/bench/dbos_agent.py: each turn's user message holds one `$ COMMAND` line, so the
/// scripted model makes one tool call and then a summary that quotes the result.
enum AgentScript {
    static let systemPrompt = "You are a coding agent. Run the commands you are asked to run."
    /// Words of the tool's filler lines (several words a line, so the scripted model's word count works as it would on real output).
    static let fillerWords = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]

    /// The user message of `turn` (from 1).
    static func userMessage(turn: Int) -> String {
        "Turn \(turn): please run this and tell me what it printed.\n$ echo turn-\(turn) && cat notes.txt"
    }

    /// The user messages of turns 1 … `turns`.
    static func messages(turns: Int) -> [String] {
        (1 ... max(1, turns)).map { userMessage(turn: $0) }
    }

    /// The tool's output for `command`: the command, then numbered filler lines, cut to exactly `size` bytes (ASCII).
    static func toolOutput(command: String, size: Int) -> String {
        var lines = ["ran: \(command)"]
        var total = lines[0].utf8.count + 1
        var n = 0
        while total < size {
            let words = (0 ..< 8).map { fillerWords[(n + $0) % fillerWords.count] }.joined(separator: " ")
            let line = String(format: "%04d ", n) + words
            lines.append(line)
            total += line.utf8.count + 1
            n += 1
        }
        return String(decoding: lines.joined(separator: "\n").utf8.prefix(size), as: UTF8.self)
    }

    /// The benchmark's tool: in-process and deterministic (no machine, no process), so that both
    /// roads pay only for their own durability. `shell` returns `toolOutput`; its time goes to `clock`.
    static func tool(size: Int, clock: BodyClock) -> ReplayAgent.ToolFunction {
        { call in
            let start = ContinuousClock.now
            defer { clock.add(ContinuousClock.now - start) }
            let object = (try? JSONSerialization.jsonObject(with: Data(call.arguments.utf8))) as? [String: Any]
            guard let command = object?["command"] as? String else {
                return ToolResultBody(id: call.id, name: call.name, content: "bad arguments: \(call.arguments)", isError: true)
            }
            return ToolResultBody(id: call.id, name: call.name, content: toolOutput(command: command, size: size))
        }
    }

    /// What the model is offered: the session's shell tool alone (the script uses nothing else).
    static let tools = [
        ToolSpec(name: "shell", description: "Run a command with /bin/sh -c in the machine; returns its output and exit code.",
                 parameters: #"{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}"#),
    ]
}
