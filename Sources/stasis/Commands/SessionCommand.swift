import Agents
import ArgumentParser
import Foundation
import Models
import Server
import StasisCore

struct SessionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session",
        abstract: "Agent sessions: a conversation log and a machine that sleeps on disk between turns.",
        discussion: """
        These commands talk to `stasis serve` (its address: --server, $STASIS_SERVER, or the one the \
        running server wrote to $STASIS_HOME/server/address). The token comes from $STASIS_TOKEN or \
        $STASIS_HOME/server/token.
        """,
        subcommands: [New.self, Send.self, Attach.self, List.self, Suspend.self, Resume.self, Fork.self, Remove.self]
    )
}

/// How session commands reach the server.
struct ServerOptions: ParsableArguments {
    @Option(help: "The stasis server, e.g. http://127.0.0.1:7878.")
    var server: String?

    @OptionGroup var global: GlobalOptions

    func client() throws -> StasisClient {
        let home = global.home
        let token: String
        if let env = ProcessInfo.processInfo.environment["STASIS_TOKEN"], !env.isEmpty {
            token = env
        } else {
            do { token = try ServerToken.load(ServerToken.file(home: home)) } catch {
                throw StasisError(.notFound, "no API token: start `stasis serve` once (it writes \(ServerToken.file(home: home).path)) or set STASIS_TOKEN")
            }
        }
        return StasisClient(baseURL: ServerAddress.resolve(server, home: home), token: token)
    }
}

extension SessionCommand {
    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a session; its machine boots with the first message.")

        @Option(help: "Image of the session's machine.") var image = "debian"
        @Option(help: "Guest memory (512M, 1G).") var memory = "512M"
        @Option(help: "Virtual CPUs.") var cpus = 1
        @Option(name: [.customShort("p"), .customLong("publish")], help: "Forward a host port: [ADDR:]HOST:GUEST.")
        var publish: [String] = []
        @Option(name: .customLong("allow-host"), help: "Let the guest reach one host service, ADDR:PORT (repeatable).")
        var allowHost: [String] = []
        @Option(help: "Seconds without a message before the machine is snapshotted and stopped.")
        var idleTimeout: Double = 30
        @Flag(name: .customLong("turn-snapshots"), inversion: .prefixedNo,
              help: "Snapshot the machine at the end of every turn (it keeps running), so `session fork --turn N` can rewind to any turn.")
        var turnSnapshots = true
        @Option(help: "Model: scripted (default, offline), openai:MODEL or anthropic:MODEL.")
        var model = "scripted"
        @Option(help: "Base URL of an OpenAI-compatible or Anthropic server.") var baseURL: String?
        @Option(help: "Environment variable of the server holding the API key.") var apiKeyEnv: String?
        @Option(help: "File (mode 0600) holding the API key.") var apiKeyFile: String?
        @OptionGroup var connection: ServerOptions

        func run() async throws {
            try await reportingErrors {
                let parts = model.split(separator: ":", maxSplits: 1).map(String.init)
                var modelConfiguration = ModelConfiguration.scripted
                modelConfiguration.provider = parts[0]
                modelConfiguration.model = parts.count > 1 ? parts[1] : nil
                modelConfiguration.baseURL = baseURL
                modelConfiguration.apiKeyEnv = apiKeyEnv
                modelConfiguration.apiKeyFile = apiKeyFile
                let info = try await connection.client().createSession(CreateSessionRequest(
                    image: image, memory: memory, cpus: cpus, ports: publish, allowHosts: allowHost,
                    idleTimeoutSeconds: idleTimeout, model: modelConfiguration, turnSnapshots: turnSnapshots))
                if connection.global.json { return try printJSON(info) }
                print(info.id)
            }
        }
    }

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Send a message and stream the turn as it happens.",
            discussion: "With the scripted model, lines starting with `$ ` become shell commands in the machine.")

        @Argument(help: "Session id or prefix.") var session: String
        @Argument(help: "The message; - reads it from stdin.") var message: [String]
        @Flag(help: "Queue the message and return at once.") var detach = false
        @OptionGroup var connection: ServerOptions

        func run() async throws {
            let failed = try await reportingErrors { () -> Bool in
                let client = try connection.client()
                var text = message.joined(separator: " ")
                if text == "-" { text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
                let before = try await client.session(session)
                let turn = try await client.send(before.id, text: text)
                if detach {
                    print(turn.turn)
                    return false
                }
                let printer = RecordPrinter(json: connection.global.json)
                for try await record in client.events(before.id, after: before.lastSeq) {
                    printer.print(record)
                    if record.kind == .system, let event = try? record.decodeBody(SystemEventBody.self),
                       event.event == "turnEnded", event.turn == turn.turn {
                        return event.message?.hasPrefix("turn failed") == true
                    }
                }
                return false
            }
            if failed { throw ExitCode(1) }
        }
    }

    struct Attach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a session's log and follow it (Ctrl-C to stop).")

        @Argument(help: "Session id or prefix.") var session: String
        @Option(help: "Start after this record number.") var after: Int64 = 0
        @Flag(help: "Print what is there and stop.") var noFollow = false
        @Option(help: "Stop after the first lifecycle event of this name (suspended, restored, turnEnded, …).")
        var until: String?
        @OptionGroup var connection: ServerOptions

        func run() async throws {
            try await reportingErrors {
                let client = try connection.client()
                let printer = RecordPrinter(json: connection.global.json)
                for try await record in client.events(session, after: after, follow: !noFollow) {
                    printer.print(record)
                    if let until, record.kind == .system, (try? record.decodeBody(SystemEventBody.self))?.event == until { return }
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List sessions.")

        @OptionGroup var connection: ServerOptions

        func run() async throws {
            try await reportingErrors {
                let sessions = try await connection.client().sessions()
                if connection.global.json { return try printJSON(sessions) }
                let rows = sessions.map { s in
                    [s.id, s.state.rawValue, s.configuration.image, s.configuration.model.provider, "\(s.lastSeq)",
                     s.machine ?? "-", s.snapshot ?? "-", s.parent ?? "-"]
                }
                print(table(["ID", "STATE", "IMAGE", "MODEL", "RECORDS", "MACHINE", "SNAPSHOT", "PARENT"], rows))
            }
        }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Snapshot an idle session's machine and stop it now.")
        @Argument(help: "Session id or prefix.") var session: String
        @OptionGroup var connection: ServerOptions

        func run() async throws {
            try await reportingErrors { try printInfo(try await connection.client().suspend(session), connection) }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Restore a suspended session's machine without a message.")
        @Argument(help: "Session id or prefix.") var session: String
        @OptionGroup var connection: ServerOptions

        func run() async throws {
            try await reportingErrors { try printInfo(try await connection.client().resume(session), connection) }
        }
    }

    struct Fork: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A new session with this one's log so far and a fork of its machine; prints the new id.",
            discussion: """
            With --turn N, the new session starts where turn N of this one ended (turns count from 1, \
            inherited turns included): its log up to that turn and the machine as that turn left it, \
            from the snapshot taken when the turn ended. The original session stays as it is.
            """)
        @Argument(help: "Session id or prefix.") var session: String
        @Option(help: ArgumentHelp("Rewind: fork as turn N left the session.", valueName: "N")) var turn: Int?
        @OptionGroup var connection: ServerOptions

        func validate() throws {
            if let turn, turn < 1 { throw ValidationError("--turn counts from 1") }
        }

        func run() async throws {
            try await reportingErrors {
                let info = try await connection.client().fork(session, atTurn: turn)
                if connection.global.json { return try printJSON(info) }
                print(info.id)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Delete sessions: their machines stop; their logs are kept (append-only).")
        @Argument(help: "Session ids or prefixes.") var sessions: [String]
        @OptionGroup var connection: ServerOptions

        func run() async throws {
            try await reportingErrors {
                let client = try connection.client()
                try await forEachReference(sessions) { id in
                    try await client.deleteSession(id)
                    print(id)
                }
            }
        }
    }
}

private func printInfo(_ info: SessionInfo, _ connection: ServerOptions) throws {
    if connection.global.json { return try printJSON(info) }
    print("\(info.id) \(info.state.rawValue)\(info.snapshot.map { " snapshot \($0)" } ?? "")")
}
