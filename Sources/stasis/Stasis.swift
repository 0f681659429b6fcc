import ArgumentParser
import Foundation
import StasisCore

@main
struct Stasis: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stasis",
        abstract: "Durable microVMs for AI agents: run, snapshot and restore whole machines.",
        discussion: """
        State lives in $STASIS_HOME (default ~/.stasis). Run `stasis doctor` to check the setup.

        Exit codes: a command run in a machine passes its own exit code through; 125 means stasis \
        itself failed, 126 the command could not be run, 127 it was not found.
        """,
        version: "0.1.0",
        subcommands: [
            Run.self, Exec.self, PS.self, Logs.self, Stop.self, Remove.self,
            SnapshotCommand.self, Snapshots.self, Restore.self, Fork.self, GC.self, DF.self,
            ImageCommand.self, Images.self, Serve.self, SessionCommand.self, Doctor.self,
        ]
    )

    /// ArgumentParser's own entry point, after raising the open-file limit (`OpenFileLimit`).
    static func main() async {
        OpenFileLimit.raiseToHardLimit()
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Flag(name: .long, help: "Print results as JSON, for scripts.")
    var json = false

    var home: StasisHome { StasisHome.fromEnvironment() }
}
