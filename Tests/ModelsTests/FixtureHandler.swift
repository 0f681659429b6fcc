import NIOCore
import NIOHTTP1

@testable import Models

/// Serves one connection of a `FixtureServer`: reads each request whole, records it, and writes the
/// fixture's answer piece by piece, flushing each, so the client sees a real stream.
final class FixtureHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: FixtureServer
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(server: FixtureServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(var buffer):
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head else { return }
            let request = RecordedRequest(
                method: "\(head.method)", path: head.uri, headers: head.headers.map { ($0.name, $0.value) },
                body: String(decoding: body, as: UTF8.self))
            server.record(request)
            if let mismatch = server.mismatch(in: request) {
                let answer: JSONValue = ["error": ["message": .string("fixture mismatch: \(mismatch)")]]
                let text = (try? answer.encodedString()) ?? "fixture mismatch"
                respond(context: context, status: 418, contentType: "application/json", pieces: [Array(text.utf8)], end: true)
            } else {
                let fixture = server.fixture
                respond(context: context, status: fixture.status, contentType: fixture.contentType,
                        pieces: server.bodyPieces(), end: !(fixture.keepOpen ?? false))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        server.connectionClosed()
        context.fireChannelInactive()
    }

    private func respond(context: ChannelHandlerContext, status: Int, contentType: String, pieces: [[UInt8]], end: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "transfer-encoding", value: "chunked")
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
        context.writeAndFlush(Self.wrapOutboundOut(.head(head)), promise: nil)
        for piece in pieces {
            let buffer = context.channel.allocator.buffer(bytes: piece)
            context.writeAndFlush(Self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if end { context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil) }
    }
}
