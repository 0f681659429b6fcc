import Agents
import ArgumentParser
import AsyncHTTPClient
import Context
import Foundation
import Logging
import Models
import Server
import StasisCore

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the HTTP API for agent sessions (docs/openapi.yaml).",
        discussion: """
        Sessions live in $STASIS_HOME/context.sqlite (their logs) and in snapshots (their machines). \
        On start, sessions that a crash left mid-turn are brought back from their last snapshot. \
        Stop with Ctrl-C or SIGTERM: idle machines are snapshotted first, so nothing is lost. \
        The bearer token is made on the first start and kept in $STASIS_HOME/server/token (0600).
        """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 7878

    @Option(help: "Largest request body accepted, in bytes.")
    var maxBody = 1 << 20

    @Flag(help: "Log every session transition to stderr.")
    var verbose = false

    func run() async throws {
        try await reportingErrors {
            let home = StasisHome.fromEnvironment()
            try home.prepare()
            var logger = Logger(label: "stasis")
            logger.logLevel = verbose ? .debug : .info
            let log = try ContextLog(url: home.contextLog)
            let environment = SessionEnvironment(
                home: home, log: log, makeModel: { try $0.makeProvider(httpClient: .shared) }, logger: logger)
            let manager = SessionManager(environment: environment)
            try await manager.start()
            let token = try ServerToken.loadOrCreate(home: home)
            let server = StasisServer(manager: manager, token: token, host: host, port: port, maxBodyBytes: maxBody, logger: logger)
            let addressFile = ServerAddress.file(home: home)
            try await server.run { port in
                let url = "http://\(host):\(port)"
                try? AtomicFile.write(Data((url + "\n").utf8), to: addressFile)
                progress("stasis serving on \(url) (token in \(ServerToken.file(home: home).path))")
            }
            progress("stasis: shutting down; suspending idle sessions")
            await manager.shutdown(suspending: true)
            try? FileManager.default.removeItem(at: addressFile)
        }
    }
}

/// Where `stasis serve` says it listens, so `stasis session` finds it.
enum ServerAddress {
    static func file(home: StasisHome) -> URL { home.root.appendingPathComponent("server/address") }

    /// `--server`, else $STASIS_SERVER, else the running server's address file, else the default port.
    static func resolve(_ option: String?, home: StasisHome) -> String {
        if let option { return option }
        if let env = ProcessInfo.processInfo.environment["STASIS_SERVER"], !env.isEmpty { return env }
        if let text = try? String(contentsOf: file(home: home), encoding: .utf8) {
            let url = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !url.isEmpty { return url }
        }
        return "http://127.0.0.1:7878"
    }
}
