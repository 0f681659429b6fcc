import ArgumentParser
import Foundation
import Guest
import Machines
import StasisCore

/// How to run a command in a machine; shared by `run` and `exec`.
struct ProcessOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "Keep standard input open and send it to the command.")
    var interactive = false

    @Option(name: .shortAndLong, help: ArgumentHelp("Set an environment variable.", valueName: "KEY=VALUE"))
    var env: [String] = []

    @Option(name: [.customShort("w"), .long], help: "Working folder in the guest.")
    var workdir: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("User in the guest: a name, uid or uid:gid.", valueName: "USER"))
    var user: String?

    @Option(help: ArgumentHelp("Kill the command after this many seconds.", valueName: "SECONDS"))
    var timeout: Double?

    func request(_ argv: [String], detach: Bool = false, outputPath: String = "") throws -> ExecRequest {
        for e in env where !e.contains("=") || e.hasPrefix("=") {
            throw StasisError(.invalidArgument, "invalid -e \(e): use KEY=VALUE")
        }
        if let timeout, timeout <= 0 { throw StasisError(.invalidArgument, "--timeout must be positive") }
        return ExecRequest(argv: argv, environment: env, workingDirectory: workdir ?? "", user: user ?? "",
                           stdin: interactive && !detach, timeoutMilliseconds: UInt64((timeout ?? 0) * 1000),
                           detach: detach, outputPath: outputPath)
    }
}

/// Runs a command in the guest with this terminal's streams attached; returns the exit code the
/// CLI should exit with.
func runAttached(_ machine: Machine, _ request: ExecRequest) async throws -> Int32 {
    try await machine.withAgent { agent in
        let (id, events) = try await agent.exec(request)
        let forwarder = SignalForwarder { signal in Task { try? await agent.signal(id, signal) } }
        defer { forwarder.cancel() }
        let stdinTask: Task<Void, Never>? = request.stdin ? Task.detached {
            let input = FileHandle.standardInput
            while !Task.isCancelled {
                let chunk = input.availableData
                if chunk.isEmpty { break }
                do { try await agent.writeStdin(id, Array(chunk)) } catch { return }
            }
            try? await agent.closeStdin(id)
        } : nil
        defer { stdinTask?.cancel() }
        do {
            for try await event in events {
                switch event {
                case .started: continue
                case .output(.stdout, let data): FileHandle.standardOutput.write(Data(data))
                case .output(.stderr, let data): FileHandle.standardError.write(Data(data))
                case .exited(let status):
                    if status.timedOut { printError("the command timed out and was killed") }
                    return status.shellCode
                }
            }
        } catch let error as StasisError where error.code == .guestFailure {
            if let cause = error.cause as? Errno {
                printError(error.message)
                return cause.value == ENOENT ? ExitCodes.notFound : ExitCodes.cannotInvoke
            }
            throw error
        }
        throw StasisError(.guestFailure, "the command's output ended without an exit status")
    }
}

/// Forwards SIGINT and SIGTERM received by the CLI to the guest command.
final class SignalForwarder: @unchecked Sendable {  // sources are only cancelled, which Dispatch allows from any thread
    private let sources: [any DispatchSourceSignal]

    init(_ forward: @escaping @Sendable (Int32) -> Void) {
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { forward(sig) }
            source.resume()
            return source
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
