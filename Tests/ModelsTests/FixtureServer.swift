import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A local HTTP/1.1 server on 127.0.0.1 that replays one fixture to every request, records the
/// requests it gets, and says when a connection closes.
final class FixtureServer: Sendable {
    let fixture: Fixture
    /// When set, the answer's body is written in pieces of this many bytes (cutting lines and UTF-8
    /// characters); otherwise one piece per event, as the real APIs flush them.
    let chunkSize: Int?
    /// Yields once each time a client connection closes.
    let closedConnections: AsyncStream<Void>
    private let closedContinuation: AsyncStream<Void>.Continuation
    private let recorded = Mutex<[RecordedRequest]>([])
    private let listener = Mutex<(any Channel)?>(nil)

    private init(fixture: Fixture, chunkSize: Int?) {
        self.fixture = fixture
        self.chunkSize = chunkSize
        (closedConnections, closedContinuation) = AsyncStream.makeStream(of: Void.self)
    }

    /// A server replaying `Fixtures/<name>.json`, listening on a free port.
    static func start(fixture name: String, chunkSize: Int? = nil) async throws -> FixtureServer {
        let server = FixtureServer(fixture: try Fixture.named(name), chunkSize: chunkSize)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FixtureHandler(server: server))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        server.listener.withLock { $0 = channel }
        return server
    }

    /// Runs `body` with a server replaying `Fixtures/<name>.json`, and stops the server after it.
    static func with<Result>(
        fixture name: String, chunkSize: Int? = nil, _ body: (FixtureServer) async throws -> Result
    ) async throws -> Result {
        let server = try await start(fixture: name, chunkSize: chunkSize)
        do {
            let result = try await body(server)
            try await server.shutdown()
            return result
        } catch {
            try? await server.shutdown()
            throw error
        }
    }

    /// The port the server listens on.
    var port: Int { listener.withLock { $0?.localAddress?.port } ?? 0 }

    /// The server's root URL, e.g. "http://127.0.0.1:40123".
    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// The requests received so far, oldest first.
    var requests: [RecordedRequest] { recorded.withLock { $0 } }

    /// Stops listening.
    func shutdown() async throws {
        let channel = listener.withLock { $0 }
        try await channel?.close()
    }

    /// What is wrong with `request` for this fixture, or nil when it matches.
    func mismatch(in request: RecordedRequest) -> String? {
        let expected = fixture.request
        if request.method != expected.method { return "expected method \(expected.method), got \(request.method)" }
        if request.path != expected.path { return "expected path \(expected.path), got \(request.path)" }
        let missing = expected.mustContain.filter { !request.body.contains($0) }
        return missing.isEmpty ? nil : "the request body lacks \(missing)"
    }

    func record(_ request: RecordedRequest) {
        recorded.withLock { $0.append(request) }
    }

    func connectionClosed() {
        closedContinuation.yield()
    }

    /// The answer's body in the pieces it is written in.
    func bodyPieces() -> [[UInt8]] {
        let bytes = Array(fixture.body.utf8)
        if let chunkSize {
            return stride(from: 0, to: bytes.count, by: chunkSize).map { start in
                Array(bytes[start..<min(start + chunkSize, bytes.count)])
            }
        }
        var pieces: [[UInt8]] = []
        var current: [UInt8] = []
        for byte in bytes {
            current.append(byte)
            if current.count >= 2, current.suffix(2) == [0x0A, 0x0A] {
                pieces.append(current)
                current = []
            }
        }
        if !current.isEmpty { pieces.append(current) }
        return pieces
    }
}
