import Foundation
import Replay

/// What `stasis-bench replay-vs-snapshot` measured, and its tables.
struct ReplayVsSnapshotReport: BenchReport {
    var host: HostInfo
    var memoryMiB: Int
    var toolBytes: Int
    /// Turns the model is shown; nil: the whole transcript.
    var contextTurns: Int?
    var rows: [Row]
    var take: SnapshotSide.Take
    var restores: [SnapshotSide.Restore]
    var restoreReturned: Summary
    var restoreAnswered: Summary
    var limits: LimitEstimate?
    var dbos: DBOSPeer.Outcome
    var totalSeconds: Double

    /// One N.
    struct Row: Encodable {
        var turns: Int
        var reps: Int
        var replay: ReplayRoad.Build
        var session: SessionRoad.Build
        /// ms, a fresh engine until turn N + 1 calls the model.
        var replayResume: Summary
        /// ms, a fresh log until the next request's messages are built from the last turns' records.
        var tailRead: Summary
        var tailRecords: Int
        /// ms, the same from the whole log (what today's Session reads).
        var wholeRead: Summary
        var journalBytes: Int64
        var logBytes: Int64
    }

    /// Where the default history limits would stop the workflow, extrapolated from the largest N.
    struct LimitEstimate: Encodable {
        var fromTurns: Int
        var eventsPerTurn: Double
        var payloadBytesPerTurn: Double
        /// The turn during which event 51,201 would be journaled.
        var eventsLimitTurn: Int
        /// The turn during which the payload would pass 50 MiB.
        var bytesLimitTurn: Int
        var limitTurn: Int { min(eventsLimitTurn, bytesLimitTurn) }
        /// Measured: the event count at which the warning fired in the largest run, and its turn.
        var warnedAtEvents: Int?
        var warningTurn: Int?

        init?(_ row: Row, limits: HistoryLimits = .default) {
            guard row.turns > 0, row.replay.events > 0 else { return nil }
            fromTurns = row.turns
            eventsPerTurn = Double(row.replay.events) / Double(row.turns)
            payloadBytesPerTurn = Double(row.replay.payloadBytes) / Double(row.turns)
            eventsLimitTurn = Int((Double(limits.maxEvents + 1) / eventsPerTurn).rounded(.up))
            bytesLimitTurn = Int((Double(limits.maxBytes) / payloadBytesPerTurn).rounded(.down)) + 1
            warnedAtEvents = row.replay.warnedAtEvents
            warningTurn = row.replay.warnedAtEvents.map { Int((Double($0) / eventsPerTurn).rounded(.up)) }
        }
    }

    /// Restore (median) + the log tail read at N: the Stasis road's resume.
    func snapshotResume(_ row: Row) -> Double { restoreReturned.median + row.tailRead.median }

    private func span(_ s: Summary, _ digits: Int = 1) -> String {
        "\(fmt(s.median, digits)) [\(fmt(s.min, digits))–\(fmt(s.max, digits))]"
    }

    private func kb(_ bytes: Int64) -> String { fmt(Double(bytes) / 1024, 0) }

    func render() -> String {
        var out = """
        stasis-bench replay-vs-snapshot — \(host.header)
        agent loop: scripted model, one shell tool call per turn (3 steps / 7 log records a turn), tool in-process, \(toolBytes) B of tool output,
        model shown \(contextTurns.map { "the last \($0) turns" } ?? "the whole transcript"); machine \(memoryMiB) MiB, --network none; run took \(fmt(totalSeconds)) s

        Time to resume at turn N, ms (median [min–max]):
        """
        out += "\n"
        out += table(
            ["turns", "reps", "replay: engine -> turn N+1", "stasis: restore + log tail", "log tail read", "whole-log read", "DBOS recovery", "DBOS incl. process"],
            rows.map { r in
                let d = dbos.row(r.turns)
                return ["\(r.turns)", "\(r.reps)", span(r.replayResume), fmt(snapshotResume(r), 1), span(r.tailRead, 2), span(r.wholeRead),
                        d.map { fmt($0.recoveryMedianMillis, 0) + " (\($0.recoveryMillis.count))" } ?? "-",
                        d.map { fmt($0.recoveryWithProcessMillis, 0) } ?? "-"]
            })
        out += "\n  stasis = restore() returned, median of \(restoreReturned.samples.count): \(fmt(restoreReturned.median, 1)) ms [\(fmt(restoreReturned.min, 1))–\(fmt(restoreReturned.max, 1))]"
        out += " (first exec answered: \(fmt(restoreAnswered.median, 1)) ms), measured once, plus the log tail read at N (\(rows.map(\.tailRecords).max() ?? 0) records at most)\n"

        out += "\nBytes on disk after the run (SQLite file + WAL; KiB):\n"
        out += table(
            ["turns", "replay journal", "journal payload", "events", "context log", "record bodies", "records", "DBOS db", "DBOS outputs"],
            rows.map { r in
                let d = dbos.row(r.turns)
                return ["\(r.turns)", kb(r.journalBytes), kb(Int64(r.replay.payloadBytes)), "\(r.replay.events)", kb(r.logBytes),
                        kb(Int64(r.session.bodyBytes)), "\(r.session.records)", d.map { kb($0.storedBytes) } ?? "-", d.map { kb(Int64($0.outputBytes)) } ?? "-"]
            })

        let snapCPU = take.benchCPUMs + take.childrenCPUMs
        out += "\n\nCPU to build the N turns, ms (this process, getrusage; \"in model+tool\" is wall time inside them, single-threaded CPU work;"
        out += "\nstasis adds one suspend snapshot):\n"
        out += table(
            ["turns", "replay run", "in model+tool", "stasis appends", "in model+tool", "stasis + snapshot", "QEMU idle meanwhile", "DBOS run",
             "wall: replay / stasis / DBOS (s)"],
            rows.map { r in
                let d = dbos.row(r.turns)
                return ["\(r.turns)", fmt(r.replay.cpuMs), fmt(r.replay.bodyMs), fmt(r.session.cpuMs), fmt(r.session.bodyMs), fmt(r.session.cpuMs + snapCPU),
                        r.session.qemuIdleCPUMs.map { fmt($0) } ?? "-",
                        d.map { fmt($0.runCPUSeconds * 1000) + ($0.unsyncedBuild ? " (sync off)" : "") } ?? "-",
                        "\(fmt(r.replay.wallMs / 1000, 2)) / \(fmt(r.session.wallMs / 1000, 2)) / \(d.map { fmt($0.runSeconds, 2) } ?? "-")"]
            })
        out += "\n  suspend snapshot: \(fmt(take.wallMs)) ms (guest paused \(fmt(take.pausedMs, 1)) ms), CPU \(fmt(take.benchCPUMs)) ms here + \(fmt(take.childrenCPUMs)) ms child processes"
        out += " + QEMU's own (not readable: it exits; at most the pause); \(fmt(Double(take.allocatedBytes) / 1_048_576, 1)) MiB allocated"
        let restoreCPU = CPUSplit.median(restores.map { CPUSplit(qemu: $0.qemuCPUMs ?? .nan, bench: $0.benchCPUMs, children: $0.childrenCPUMs) })
        out += "\n  one restore to first exec: \(restoreCPU.text)\n"

        out += "\nOverhead outside the model and the tool (wall − time in them), µs:\n"
        out += table(
            ["turns", "replay per step", "replay per turn", "stasis per record", "stasis per turn", "DBOS per step", "DBOS per turn"],
            rows.map { r in
                let d = dbos.row(r.turns)
                let n = Double(r.turns)
                return ["\(r.turns)", fmt(r.replay.stepOverheadMicros), fmt((r.replay.wallMs - r.replay.bodyMs) * 1000 / n),
                        fmt(r.session.appendOverheadMicros), fmt((r.session.wallMs - r.session.bodyMs) * 1000 / n),
                        d.map { $0.unsyncedBuild ? "(sync off) " + fmt($0.stepOverheadMicros) : fmt($0.stepOverheadMicros) } ?? "-",
                        d.map { fmt(($0.runSeconds - $0.bodySeconds) * 1e6 / n) } ?? "-"]
            })

        if let l = limits {
            out += "\n\nReplay history limits (defaults: error past 51,200 events or 50 MiB, warning at 10,240 events or 10 MiB), from N = \(l.fromTurns):"
            out += "\n  \(fmt(l.eventsPerTurn, 2)) events and \(fmt(l.payloadBytesPerTurn, 0)) payload bytes per turn"
            out += "\n  event limit at turn \(l.eventsLimitTurn), byte limit at turn \(l.bytesLimitTurn): the workflow fails at turn \(l.limitTurn) (extrapolated)"
            if let w = l.warnedAtEvents, let t = l.warningTurn { out += "\n  warning fired at event \(w), turn \(t) (measured)" }
        }
        out += "\n\nDBOS peer: "
        if let r = dbos.result {
            out += "dbos \(r.dbosVersion), Python \(r.python), SQLite system database with DBOS's defaults"
            if r.rows.contains(where: \.unsyncedBuild) {
                out += "; histories above \(r.rows.filter { !$0.unsyncedBuild }.map(\.turns).max() ?? 0) turns were built with synchronous=OFF (recoveries use the defaults)"
            }
        } else {
            out += "skipped: \(dbos.skipped ?? "?")"
        }
        return out + "\n"
    }

    /// The chart of resume time against N.
    func chart() -> ResumeChart {
        var series = [
            ResumeChart.Series(name: "Replay: re-execute the journal", color: "#d62728",
                               points: rows.map { (Double($0.turns), $0.replayResume.median) }),
            ResumeChart.Series(name: "Stasis: restore + log tail", color: "#1f77b4",
                               points: rows.map { (Double($0.turns), snapshotResume($0)) }),
            ResumeChart.Series(name: "Stasis: restore + whole log", color: "#1f77b4", dashed: true,
                               points: rows.map { (Double($0.turns), restoreReturned.median + $0.wholeRead.median) }),
        ]
        if dbos.result != nil {
            series.append(ResumeChart.Series(name: "DBOS: recovery, new process", color: "#2ca02c",
                                             points: rows.compactMap { r in dbos.row(r.turns).map { (Double(r.turns), $0.recoveryMedianMillis) } }))
        }
        return ResumeChart(
            title: "Resuming an agent at turn N: replay vs snapshot",
            subtitle: "stasis-bench replay-vs-snapshot, \(host.date.prefix(10)), \(host.cores) cores, \(host.accelerator); medians",
            series: series)
    }
}
