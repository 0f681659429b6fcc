import Foundation
import Guest
import Machines
import Models
import StasisCore

/// The tools a session's model may call; each runs inside the session's machine through the
/// guest agent.
struct ToolRunner: Sendable {
    let shellTimeoutSeconds: Double
    let outputLimitBytes: Int

    /// What the model is offered.
    static let specs: [ToolSpec] = [
        ToolSpec(
            name: "shell", description: "Run a command with /bin/sh -c in the machine; returns its output and exit code.",
            parameters: #"{"type":"object","properties":{"command":{"type":"string","description":"The shell command"},"timeout":{"type":"number","description":"Seconds before the command is killed"}},"required":["command"]}"#),
        ToolSpec(
            name: "read_file", description: "Read a text file in the machine.",
            parameters: #"{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}"#),
        ToolSpec(
            name: "write_file", description: "Write a file in the machine, replacing it.",
            parameters: #"{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"]}"#),
        ToolSpec(
            name: "list_dir", description: "List a folder in the machine.",
            parameters: #"{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}"#),
    ]

    /// Runs `call` in `machine`. Failures of the tool itself (bad arguments, a missing file, a
    /// non-zero exit) become an error result for the model; a machine that cannot be reached throws.
    func run(_ call: ToolCall, in machine: Machine) async throws -> ToolResultBody {
        let clock = ContinuousClock()
        let start = clock.now
        var result: ToolResultBody
        do {
            let arguments = try Self.arguments(call)
            switch call.name {
            case "shell":
                result = try await shell(call, arguments, machine)
            case "read_file":
                let path = try Self.string("path", arguments, call)
                let bytes = try await machine.withAgent { try await $0.readFile(path) }
                result = limited(call, String(decoding: bytes, as: UTF8.self), isError: false)
            case "write_file":
                let path = try Self.string("path", arguments, call)
                let content = try Self.string("content", arguments, call)
                try await machine.withAgent { try await $0.writeFile(path, Array(content.utf8)) }
                result = ToolResultBody(id: call.id, name: call.name, content: "wrote \(content.utf8.count) bytes to \(path)")
            case "list_dir":
                let path = try Self.string("path", arguments, call)
                let run = try await machine.withAgent {
                    try await $0.run(ExecRequest(argv: ["ls", "-la", "--", path], timeoutMilliseconds: 30_000))
                }
                let text = String(decoding: run.stdout + run.stderr, as: UTF8.self)
                result = limited(call, text, isError: run.status.shellCode != 0)
            default:
                result = ToolResultBody(
                    id: call.id, name: call.name, content: "unknown tool \(call.name); the tools are shell, read_file, write_file, list_dir",
                    isError: true)
            }
        } catch let error as ToolInputError {
            result = ToolResultBody(id: call.id, name: call.name, content: error.message, isError: true)
        } catch let error as StasisError where error.code == .guestFailure || error.code == .notFound || error.code == .invalidArgument {
            // The guest answered with an error (no such file, …): the model should see it and go on.
            result = ToolResultBody(id: call.id, name: call.name, content: "error: \(error.message)", isError: true)
        }
        let elapsed = clock.now - start
        result.milliseconds = elapsed.milliseconds
        return result
    }

    private func shell(_ call: ToolCall, _ arguments: [String: Any], _ machine: Machine) async throws -> ToolResultBody {
        let command = try Self.string("command", arguments, call)
        let timeout = (arguments["timeout"] as? Double).map { min($0, shellTimeoutSeconds) } ?? shellTimeoutSeconds
        let request = ExecRequest(argv: ["/bin/sh", "-c", command], timeoutMilliseconds: UInt64(max(timeout, 0.001) * 1000))
        let run = try await machine.withAgent(timeout: .seconds(30)) { try await $0.run(request) }
        var text = String(decoding: run.stdout, as: UTF8.self)
        if !run.stderr.isEmpty { text += (text.isEmpty || text.hasSuffix("\n") ? "" : "\n") + String(decoding: run.stderr, as: UTF8.self) }
        var result = limited(call, text, isError: run.status.shellCode != 0)
        let status = run.status.timedOut
            ? "killed after \(timeout) s (timeout)"
            : run.status.signal.map { "killed by signal \($0)" } ?? "exit code \(run.status.code ?? -1)"
        result.content += (result.content.isEmpty || result.content.hasSuffix("\n") ? "" : "\n") + "[\(status)]"
        return result
    }

    /// Cuts `text` at the output limit (on a character boundary) and says how much was cut.
    private func limited(_ call: ToolCall, _ text: String, isError: Bool) -> ToolResultBody {
        let bytes = text.utf8.count
        guard bytes > outputLimitBytes else {
            return ToolResultBody(id: call.id, name: call.name, content: text, isError: isError)
        }
        var kept = ""
        var size = 0
        for character in text {
            let length = character.utf8.count
            if size + length > outputLimitBytes { break }
            kept.append(character)
            size += length
        }
        kept += "\n[output truncated: \(bytes - size) of \(bytes) bytes not shown]"
        return ToolResultBody(id: call.id, name: call.name, content: kept, isError: isError, truncated: true)
    }

    private struct ToolInputError: Error { let message: String }

    private static func arguments(_ call: ToolCall) throws -> [String: Any] {
        let text = call.arguments.isEmpty ? "{}" : call.arguments
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ToolInputError(message: "the arguments of \(call.name) are not a JSON object: \(text.prefix(200))")
        }
        return object
    }

    private static func string(_ key: String, _ arguments: [String: Any], _ call: ToolCall) throws -> String {
        guard let value = arguments[key] as? String else {
            throw ToolInputError(message: "\(call.name) needs a string argument \"\(key)\"")
        }
        return value
    }
}
