import ArgumentParser
import StasisCore

/// `stasis-bench`: measurements of Stasis against what it is built on. Each subcommand prints a
/// table (or JSON with --json) on stdout and its progress on stderr. docs/benchmarks.md records
/// the results and how to read them.
struct StasisBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stasis-bench",
        abstract: "Benchmarks of Stasis, each against a baseline.",
        discussion: """
        Uses the real $STASIS_HOME (default ~/.stasis): the kernel and guest agent that setup \
        installed there. Every machine a benchmark starts is removed when it ends, fails, or is \
        interrupted.
        """,
        subcommands: [BootBench.self, SnapshotBench.self, RestoreBench.self, ForkBench.self, ContextBench.self, SessionBench.self, ReplayVsSnapshotBench.self, StoreBench.self, ChainBench.self, LazyBench.self]
    )

    /// Top-level code in main.swift picks the synchronous `main()`, which cannot run async
    /// subcommands; inside an async function the async one is chosen.
    static func start() async {
        await main()
    }
}

OpenFileLimit.raiseToHardLimit()
await StasisBench.start()
