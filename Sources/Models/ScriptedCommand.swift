import Foundation

/// One command the scripted model found in a user message, as the tool call that carries it out.
struct ScriptedCommand: Sendable, Hashable {
    /// The tool to call: shell, read_file, list_dir or write_file.
    var tool: String
    /// The tool's arguments, JSON object text with sorted keys.
    var arguments: String
    /// How the command is named in the final summary: "$ cmd", "read PATH", "ls PATH", "write PATH".
    var label: String

    /// The commands in `message`, in order: `$ command`, `read PATH`, `ls PATH`, and
    /// `write PATH` … `EOF`. Other lines are not commands.
    static func parse(_ message: String) -> [ScriptedCommand] {
        var lines = Self.lines(of: message)[...]
        var commands: [ScriptedCommand] = []
        while let line = lines.popFirst() {
            if line.hasPrefix("$ ") {
                let command = String(line.dropFirst(2))
                commands.append(make("shell", ["command": command], label: "$ \(command)"))
            } else if let path = argument(of: "read", in: line) {
                commands.append(make("read_file", ["path": path], label: "read \(path)"))
            } else if let path = argument(of: "ls", in: line) {
                commands.append(make("list_dir", ["path": path], label: "ls \(path)"))
            } else if let path = argument(of: "write", in: line) {
                // The body runs to a line `EOF`, or to the end of the message when there is none.
                var body: [Substring] = []
                while let next = lines.popFirst(), next != "EOF" { body.append(next) }
                let content = body.isEmpty ? "" : body.joined(separator: "\n") + "\n"
                commands.append(make("write_file", ["path": path, "content": content], label: "write \(path)"))
            }
        }
        return commands
    }

    /// The lines of `text`, ended by LF or CRLF (a CRLF is one Character, so splitting on "\n"
    /// alone would miss it).
    static func lines(of text: String) -> [Substring] {
        text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }.map { line in
            line.hasSuffix("\r") ? line.dropLast() : line
        }
    }

    /// The rest of `line` after `verb` and a space, trimmed; nil when the line is not that verb
    /// with an argument.
    private static func argument(of verb: String, in line: Substring) -> String? {
        guard line.hasPrefix(verb + " ") else { return nil }
        let rest = line.dropFirst(verb.count + 1).trimmingCharacters(in: .whitespaces)
        return rest.isEmpty ? nil : rest
    }

    private static func make(_ tool: String, _ arguments: [String: String], label: String) -> ScriptedCommand {
        ScriptedCommand(tool: tool, arguments: jsonObject(arguments), label: label)
    }

    /// `object` as compact JSON with sorted keys, so that the same command gives the same bytes.
    static func jsonObject(_ object: [String: String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a dictionary of strings cannot fail; the fallback keeps the type total.
        guard let data = try? encoder.encode(object) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
