/// Splits a `text/event-stream` body into events, as the HTML standard's event-stream
/// interpretation does. Bytes may arrive in chunks split anywhere: in the middle of a line, between
/// a CR and its LF, or inside a UTF-8 character; a line is decoded only once it is complete.
struct SSEParser: Sendable {
    private var line: [UInt8] = []
    private var afterCR = false
    private var firstLine = true
    private var eventType = ""
    private var data = ""
    private var hasData = false
    private var lastEventID: String?

    private static let lf: UInt8 = 0x0A
    private static let cr: UInt8 = 0x0D
    private static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]

    /// Reads more bytes of the body and returns the events they complete.
    mutating func feed(_ bytes: some Sequence<UInt8>) -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        for byte in bytes {
            if afterCR {
                afterCR = false
                // The LF of a CRLF that a chunk boundary split: the line already ended at the CR.
                if byte == Self.lf { continue }
            }
            switch byte {
            case Self.lf:
                endLine(into: &events)
            case Self.cr:
                endLine(into: &events)
                afterCR = true
            default:
                line.append(byte)
            }
        }
        return events
    }

    /// Ends the body: a last line without its line break still counts, and a last event without
    /// its blank line is still delivered (servers that close the stream right after it exist).
    mutating func finish() -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        if !line.isEmpty { endLine(into: &events) }
        dispatch(into: &events)
        return events
    }

    private mutating func endLine(into events: inout [ServerSentEvent]) {
        var bytes = line[...]
        line.removeAll(keepingCapacity: true)
        if firstLine {
            firstLine = false
            if bytes.starts(with: Self.byteOrderMark) { bytes = bytes.dropFirst(Self.byteOrderMark.count) }
        }
        guard !bytes.isEmpty else {
            dispatch(into: &events)
            return
        }
        let text = String(decoding: bytes, as: UTF8.self)
        if text.hasPrefix(":") { return }  // a comment, often a keep-alive
        let field: Substring
        var value: Substring
        if let colon = text.firstIndex(of: ":") {
            field = text[..<colon]
            value = text[text.index(after: colon)...]
            if value.hasPrefix(" ") { value = value.dropFirst() }
        } else {
            field = text[...]
            value = ""
        }
        switch field {
        case "event":
            eventType = String(value)
        case "data":
            if hasData { data += "\n" }
            data += value
            hasData = true
        case "id":
            if !value.contains("\0") { lastEventID = String(value) }
        default:
            break  // "retry" and unknown fields do not matter to a client that does not reconnect
        }
    }

    private mutating func dispatch(into events: inout [ServerSentEvent]) {
        defer {
            eventType = ""
            data = ""
            hasData = false
        }
        guard hasData else { return }
        events.append(ServerSentEvent(event: eventType.isEmpty ? "message" : eventType, data: data, id: lastEventID))
    }
}
