import Agents
import ArgumentParser
import Context
import Foundation
import Logging
import Machines
import Models
import StasisCore

/// `stasis-bench session`: how long a message to a suspended session waits before the model is
/// called, against the restore it has to do first.
struct SessionBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session",
        abstract: "Message to a suspended session → first model call, against the restore it needs.",
        discussion: """
        One session (scripted model) in a temporary $STASIS_HOME that shares the real one's kernel, \
        guest agent and image. Its first message boots the machine. Then, every round: suspend \
        (snapshot + stop, as the idle timeout does), send `$ true`, and read the session's log:
        (a) from the call to send until the `turnStarted` record, which is appended right before \
        the model call; (b) the restore inside it (the `restored` record's own time: snapshot \
        verified, QEMU started, state loaded, first answer from the guest agent). \
        The target: (a) ≤ (b) + 50 ms, in the median.
        """
    )

    @Option(help: "Measured rounds.") var runs = 10
    @Option(help: "Image of the session's machine.") var image = "debian"
    @Option(help: ArgumentHelp("Guest memory.", valueName: "SIZE")) var memory = "512M"
    @Flag(help: "Print JSON on stdout (the table goes to stderr).") var json = false

    struct Round: Encodable {
        var messageToModelCall: Double
        var restore: Double
        var overhead: Double
    }

    struct Report: BenchReport {
        var image: String
        var memoryMiB: Int
        var rounds: [Round]
        var messageToModelCall: Summary
        var restore: Summary
        var overhead: Summary
        var command: String

        static let overheadTarget = 50.0

        func render() -> String {
            let met = overhead.median <= Self.overheadTarget
            return """
            stasis-bench session: \(image), \(memoryMiB) MiB, \(rounds.count) rounds (ms, median [min–max])
            \(table(["measure", "median", "min", "max"], [
                ["message → first model call", fmt(messageToModelCall.median, 1), fmt(messageToModelCall.min, 1), fmt(messageToModelCall.max, 1)],
                ["  of which restore (baseline)", fmt(restore.median, 1), fmt(restore.min, 1), fmt(restore.max, 1)],
                ["  session overhead", fmt(overhead.median, 1), fmt(overhead.min, 1), fmt(overhead.max, 1)],
            ]))
            ratio to restore: \(String(format: "%.3f", messageToModelCall.median / restore.median))
            target: overhead ≤ \(fmt(Self.overheadTarget)) ms: \(met ? "MET" : "MISSED")
            """
        }
    }

    func run() async throws {
        let memoryMiB = try MachineSpec.parseMemory(memory)
        try await BenchRun.main(json: json, quietTimeout: 30) { run, _ in
            let home = try Self.temporaryHome(in: run.work, sharing: run.home, image: image)
            let log = try ContextLog(url: home.contextLog)
            var logger = Logger(label: "stasis-bench")
            logger.logLevel = .warning
            let manager = SessionManager(environment: SessionEnvironment(
                home: home, log: log, makeModel: { try $0.makeProvider() }, logger: logger))
            try await manager.start()
            let info = try await manager.create(SessionConfiguration(image: image, memoryMiB: memoryMiB, idleTimeoutSeconds: 3600))
            let session = try await manager.session(info.id)
            progress("booting the session's machine")
            _ = try await session.sendAndWait("$ true")
            var rounds: [Round] = []
            for round in 1 ... runs {
                try await session.suspend()
                let before = try log.lastSeq(session: info.id)
                let start = Date()
                _ = try await session.sendAndWait("$ true")
                let records = try log.records(session: info.id, after: before)
                let events = records.filter { $0.kind == .system }.compactMap { record in
                    (try? record.decodeBody(SystemEventBody.self)).map { (record, $0) }
                }
                guard let started = events.first(where: { $0.1.event == "turnStarted" })?.0,
                      let restore = events.first(where: { $0.1.event == "restored" })?.1.milliseconds
                else { throw StasisError(.internalError, "round \(round): the turn did not restore and start") }
                let toModel = started.time.timeIntervalSince(start) * 1000
                rounds.append(Round(messageToModelCall: toModel, restore: restore, overhead: toModel - restore))
                progress("round \(round): \(fmt(toModel, 1)) ms to the model call, restore \(fmt(restore, 1)) ms")
            }
            try await manager.delete(info.id)
            return Report(
                image: image, memoryMiB: memoryMiB, rounds: rounds,
                messageToModelCall: Summary(rounds.map(\.messageToModelCall)), restore: Summary(rounds.map(\.restore)),
                overhead: Summary(rounds.map(\.overhead)), command: CommandLine.arguments.joined(separator: " "))
        }
    }

    /// A home of its own (a session manager owns its home), sharing the real kernel, agent and image.
    static func temporaryHome(in folder: URL, sharing real: StasisHome, image: String) throws -> StasisHome {
        let home = StasisHome(root: folder.appendingPathComponent("home"))
        try home.prepare()
        let fm = FileManager.default
        try fm.removeItem(at: home.kernels)
        try fm.createSymbolicLink(at: home.kernels, withDestinationURL: real.kernels.resolvingSymlinksInPath())
        try fm.createDirectory(at: home.guestAgent.deletingLastPathComponent(), withIntermediateDirectories: true)
        try fm.createSymbolicLink(at: home.guestAgent, withDestinationURL: real.guestAgent.resolvingSymlinksInPath())
        let source = real.images.appendingPathComponent(image)
        guard fm.fileExists(atPath: source.path) else {
            throw StasisError(.notFound, "no image '\(image)' in \(real.images.path): run scripts/setup.sh or pass --image")
        }
        try fm.createSymbolicLink(at: home.images.appendingPathComponent(image), withDestinationURL: source)
        return home
    }
}
