import ArgumentParser
import Foundation
import Machines
import StasisCore

struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command in a running machine.",
        discussion: "Standard output and error are streamed; stasis exits with the command's exit code."
    )

    @Flag(name: .shortAndLong, help: "Start the command in the background and return at once.")
    var detach = false

    @OptionGroup var process: ProcessOptions
    @OptionGroup var global: GlobalOptions

    @Argument(help: "The machine's name or id.")
    var machine: String

    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments.")
    var command: [String] = []

    func run() async throws {
        let code = try await reportingErrors { () async throws -> Int32 in
            let argv = command.first == "--" ? Array(command.dropFirst()) : command
            guard !argv.isEmpty else { throw StasisError(.invalidArgument, "no command given: stasis exec \(machine) COMMAND [ARG…]") }
            let target = try Machine.open(machine, store: MachineStore(home: global.home))
            if detach {
                let request = try process.request(argv, detach: true, outputPath: "/dev/console")
                let pid = try await target.withAgent { agent in try await agent.spawn(request) }
                if global.json { try printJSON(["pid": pid]) } else { print(pid) }
                return 0
            }
            return try await runAttached(target, try process.request(argv))
        }
        if code != 0 { throw ExitCode(code) }
    }
}
