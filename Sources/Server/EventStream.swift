import Context
import Foundation
import NIOCore

/// Server-sent events of a session's records: `id` is the record's sequence number, so a client
/// that reconnects with `Last-Event-ID` (or `?after=`) goes on where it stopped.
enum EventStream {
    /// One record as an SSE event; `data` is the record as JSON with its body inlined.
    static func event(_ record: ContextRecord) -> String {
        "id: \(record.seq)\nevent: \(record.kind.rawValue)\ndata: \(json(record))\n\n"
    }

    /// A record as JSON: the body is already JSON text, checked when it was appended, so it is
    /// embedded as it is rather than escaped into a string.
    static func json(_ record: ContextRecord) -> String {
        let time = Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(record.time)
        return #"{"session":"\#(record.session)","seq":\#(record.seq),"kind":"\#(record.kind.rawValue)","time":"\#(time)","checksum":"\#(record.checksum)","body":\#(record.body)}"#
    }
}
