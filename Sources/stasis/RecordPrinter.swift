import Agents
import Context
import Foundation
import Server

/// Shows session records in a terminal: the conversation plainly, tool output indented, and
/// lifecycle events as one dim line each.
struct RecordPrinter {
    let json: Bool

    func print(_ record: APIRecord) {
        if json {
            emit(#"{"seq":\#(record.seq),"kind":"\#(record.kind.rawValue)","body":\#(record.body)}"#)
            return
        }
        switch record.kind {
        case .userMessage:
            if let body = try? record.decodeBody(UserMessageBody.self) { emit("› \(body.text)") }
        case .assistantMessage:
            if let body = try? record.decodeBody(AssistantMessageBody.self), !body.text.isEmpty { emit(body.text) }
        case .toolCall:
            if let body = try? record.decodeBody(ToolCallBody.self) { emit("  ⚙ \(body.name) \(Self.summary(body))") }
        case .toolResult:
            if let body = try? record.decodeBody(ToolResultBody.self) {
                let lines = body.content.split(separator: "\n", omittingEmptySubsequences: false)
                for line in lines.prefix(40) { emit("    \(line)") }
                if lines.count > 40 { emit("    … \(lines.count - 40) more lines") }
            }
        case .system:
            if let body = try? record.decodeBody(SystemEventBody.self) { emit("  · \(Self.describe(body))") }
        }
    }

    /// Writes a line straight to stdout: a turn is streamed as it happens, even into a file or pipe.
    private func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    private static func summary(_ call: ToolCallBody) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(call.arguments.utf8)) as? [String: Any] else { return call.arguments }
        if let command = object["command"] as? String { return command }
        if let path = object["path"] as? String { return path }
        return call.arguments
    }

    static func describe(_ event: SystemEventBody) -> String {
        var text = event.event
        switch event.event {
        case "booted": text = "machine booted"
        case "restored": text = "machine restored from snapshot \(event.snapshot ?? "?")"
        case "suspended":
            text = "suspended: machine stopped, snapshot \(event.snapshot ?? "-")"
            if let bytes = event.snapshotBytes { text += String(format: " (%.1f MB on disk)", Double(bytes) / 1e6) }
        default:
            break
        }
        if let ms = event.milliseconds { text += String(format: " in %.0f ms", ms) }
        if let message = event.message { text += ": \(message)" }
        return text
    }
}
