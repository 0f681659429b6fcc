import Testing

@testable import Models

@Suite("Server-sent events parser")
struct SSEParserTests {
    /// A body using every feature: CRLF and bare CR endings, comments, event names, ids, multi-line
    /// data, a field without a value, a missing space after the colon, a BOM, and UTF-8 characters of
    /// two, three and four bytes.
    static let body = "\u{FEFF}: keep-alive\r\nevent: first\r\ndata: caf\u{E9} \u{2615} \u{1F680}\r\nid: 7\r\n\r\n"
        + "data:no space\rdata\rdata:  two spaces\r\r"
        + "event: ignored-without-data\n\n"
        + "retry: 10\nunknown: x\ndata: {\"a\": 1}\n\n"

    static let expected = [
        ServerSentEvent(event: "first", data: "caf\u{E9} \u{2615} \u{1F680}", id: "7"),
        ServerSentEvent(event: "message", data: "no space\n\n two spaces", id: "7"),
        ServerSentEvent(event: "message", data: "{\"a\": 1}", id: "7"),
    ]

    static func parse(_ pieces: [[UInt8]]) -> [ServerSentEvent] {
        var parser = SSEParser()
        var events: [ServerSentEvent] = []
        for piece in pieces { events += parser.feed(piece) }
        return events + parser.finish()
    }

    @Test func parsesAWholeBody() {
        #expect(Self.parse([Array(Self.body.utf8)]) == Self.expected)
    }

    @Test func parsesABodyFedOneByteAtATime() {
        let bytes = Array(Self.body.utf8)
        #expect(Self.parse(bytes.map { [$0] }) == Self.expected)
    }

    @Test func parsesABodySplitAtEveryPoint() {
        let bytes = Array(Self.body.utf8)
        for split in 0...bytes.count {
            let events = Self.parse([Array(bytes[..<split]), Array(bytes[split...])])
            #expect(events == Self.expected, "split at byte \(split)")
        }
    }

    @Test func aCRLFSplitBetweenItsBytesEndsOneLine() {
        var parser = SSEParser()
        #expect(parser.feed(Array("data: a\r".utf8)).isEmpty)
        // Had the LF counted as a second line end, this would dispatch an event with "a".
        #expect(parser.feed(Array("\ndata: b\r".utf8)).isEmpty)
        #expect(parser.feed(Array("\n\r\n".utf8)) == [ServerSentEvent(event: "message", data: "a\nb", id: nil)])
    }

    @Test func theLastEventNeedsNoBlankLine() {
        var parser = SSEParser()
        #expect(parser.feed(Array("event: done\ndata: [DONE]".utf8)).isEmpty)
        #expect(parser.finish() == [ServerSentEvent(event: "done", data: "[DONE]", id: nil)])
    }

    @Test func anEmptyDataLineStillMakesAnEvent() {
        var parser = SSEParser()
        #expect(parser.feed(Array("data\n\n".utf8)) == [ServerSentEvent(event: "message", data: "", id: nil)])
    }

    @Test func theEventNameDoesNotCarryOver() {
        var parser = SSEParser()
        let events = parser.feed(Array("event: a\ndata: 1\n\ndata: 2\n\n".utf8))
        #expect(events.map(\.event) == ["a", "message"])
    }
}
