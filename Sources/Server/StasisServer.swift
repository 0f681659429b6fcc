import Agents
import Context
import Hummingbird
import Logging
import NIOCore

/// The HTTP API server: sessions, messages, and their records as server-sent events.
public struct StasisServer: Sendable {
    /// Where the server listens.
    public var host: String
    /// The port; 0 picks a free one (see `onListening`).
    public var port: Int
    /// Requests without this bearer token are refused.
    public var token: String
    /// Request bodies larger than this are refused with 413.
    public var maxBodyBytes: Int
    let manager: SessionManager
    let logger: Logger

    public init(manager: SessionManager, token: String, host: String = "127.0.0.1", port: Int = 7878,
                maxBodyBytes: Int = 1 << 20, logger: Logger) {
        self.manager = manager
        self.token = token
        self.host = host
        self.port = port
        self.maxBodyBytes = maxBodyBytes
        self.logger = logger
    }

    /// The router with every route and middleware, for the server and for tests.
    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: APIErrorMiddleware())
        router.add(middleware: BearerTokenMiddleware(token: token))
        APIRoutes(manager: manager, log: manager.environment.log, maxBodyBytes: maxBodyBytes, heartbeat: .seconds(10)).add(to: router)
        return router
    }

    /// The method and path of every route, as the OpenAPI document writes them.
    public func routeList() -> [String] {
        router().routes.map { route in
            let path = route.path.description.split(separator: "/").map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }
            return "\(route.method.rawValue) /" + path.joined(separator: "/")
        }.sorted()
    }

    /// Serves until the task is cancelled or the process gets SIGTERM/SIGINT; then stops taking
    /// requests and suspends idle sessions.
    public func run(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = Application(
            router: router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "stasis"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        try await app.runService()
    }
}
