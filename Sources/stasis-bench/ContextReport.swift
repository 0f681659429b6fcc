import Foundation

/// Everything `stasis-bench context` measured; encoded as is for --json.
struct ContextReport: BenchReport {
    var host: ContextHost
    var runs: Int
    var appends: Int
    var sessions: Int
    var turns: Int
    /// Mean JSON body of the appended records, bytes.
    var meanBodyBytes: Double
    var sides: [String: AppendFigures]
    var storage: [StoragePoint]
    /// Reading the whole session back (every checksum checked), ms.
    var fullRead: Summary
    var langGraph: LangGraphResult?
    /// LangGraph's sizes at the same turns: measured where it got to, fitted after that.
    var langGraphStorage: [StoragePoint]
    var command: String

    static let batchedTarget = 20_000.0
    static let p99Target = 5.0
    /// Storage counts as linear when the bytes each turn adds vary by at most this factor.
    static let linearTolerance = 1.25

    private func side(_ side: ContextSide) -> AppendFigures? { sides[side.rawValue] }

    private func rate(_ name: String, _ a: ContextSide, _ b: ContextSide, target: Double? = nil) -> Figure {
        let x = side(a)?.appendsPerSecond.median ?? .nan, y = side(b)?.appendsPerSecond.median ?? .nan
        return Figure(name, fmt(x), fmt(y), ratio: ratioText(x, y), target: target.map { ">= \(fmt($0))" } ?? "",
                      met: target.map { x >= $0 })
    }

    private func latency(_ name: String, _ a: ContextSide, _ b: ContextSide, _ pick: (AppendFigures) -> Summary,
                         target: Double? = nil) -> Figure {
        let x = side(a).map { pick($0).median } ?? .nan, y = side(b).map { pick($0).median } ?? .nan
        return Figure(name, fmt(x, 2), fmt(y, 2), ratio: ratioText(x, y), target: target.map { "<= \(fmt($0)) ms" } ?? "",
                      met: target.map { x <= $0 })
    }

    /// Whether the bytes each interval of turns adds stay within `linearTolerance` of each other.
    static func isLinear(_ points: [StoragePoint]) -> Bool {
        let marginal = points.indices.dropFirst().map { points[$0].marginalBytesPerTurn(after: points[$0 - 1]) }
        guard let low = marginal.min(), let high = marginal.max(), low > 0 else { return false }
        return high / low <= linearTolerance
    }

    var figures: [Figure] {
        var rows = [
            rate("1 writer: appends/s", .single, .rawSingle),
            latency("1 writer: p50 (ms)", .single, .rawSingle, \.p50),
            latency("1 writer: p99 (ms)", .single, .rawSingle, \.p99, target: Self.p99Target),
            latency("1 writer: max (ms)", .single, .rawSingle, \.max),
            rate("\(sessions) sessions: appends/s", .concurrent, .rawConcurrent),
            latency("\(sessions) sessions: p50 (ms)", .concurrent, .rawConcurrent, \.p50),
            latency("\(sessions) sessions: p99 (ms)", .concurrent, .rawConcurrent, \.p99),
            rate("batches of 100: appends/s", .batch100, .rawBatch100, target: Self.batchedTarget),
            rate("batches of 1000: appends/s", .batch1000, .rawBatch1000, target: Self.batchedTarget),
        ]
        if let floor = side(.fsyncFloor) {
            rows.append(Figure("floor, page write + fdatasync: writes/s", "", fmt(floor.appendsPerSecond.median)))
            rows.append(Figure("floor, page write + fdatasync: p50 / p99 (ms)", "",
                               "\(fmt(floor.p50.median, 2)) / \(fmt(floor.p99.median, 2))"))
        }
        if let last = storage.last {
            let peer = langGraphStorage.first { $0.turn == last.turn }
            let peerText = peer.map { "\(fmt(Double($0.bytes) / 1_048_576, 1))\($0.measured ? "" : " (fit)")" } ?? "-"
            rows.append(Figure("\(last.turn) turns stored (MiB)", fmt(Double(last.bytes) / 1_048_576, 2), peerText,
                               ratio: peer.map { String(format: "%.4f", Double(last.bytes) / Double($0.bytes)) } ?? "",
                               target: "linear", met: Self.isLinear(storage)))
        }
        return rows
    }

    func render() -> String {
        var out = """
        stasis-bench context — \(host.header)
        command: \(command)
        \(runs) rounds, sides in turn; per side and round \(appends) appends (mean body \(fmt(meanBodyBytes)) B, the record mix of an agent turn), \(sessions) sessions for the concurrent side
        baseline: the same rows in raw SQLite through GRDB (WAL, synchronous=FULL, same table less the checksum):
          no checksum, no read of the session's last record, no group commit (one transaction per single append)
        storage peer: LangGraph's SqliteSaver (StateGraph on MessagesState: agent -> tools -> agent), one thread, same messages

        """
        out += Figure.render(figures)
        out += "\n\nMedians over \(runs) rounds (min-max):\n"
        out += table(["side", "appends/s", "p50 ms", "p99 ms", "max ms"], ContextSide.allCases.compactMap { s in
            side(s).map { f in
                [s.label, "\(fmt(f.appendsPerSecond.median)) (\(rangeText(f.appendsPerSecond)))",
                 "\(fmt(f.p50.median, 2)) (\(rangeText(f.p50, 2)))", "\(fmt(f.p99.median, 2)) (\(rangeText(f.p99, 2)))",
                 "\(fmt(f.max.median, 1)) (\(rangeText(f.max, 1)))"]
            }
        })
        out += "\n(batched sides: latency per batch)\n"
        out += "\nStorage of one \(turns)-turn agent session (7 records a turn; database + WAL after a TRUNCATE checkpoint; turn 0 = empty):\n"
        var rows: [[String]] = []
        for (i, point) in storage.enumerated() {
            let previous = i > 0 ? storage[i - 1] : nil
            let peer = langGraphStorage.first { $0.turn == point.turn }
            let peerPrevious = i > 0 ? langGraphStorage.first { $0.turn == storage[i - 1].turn } : nil
            let checkpoints = langGraph?.points.first { $0.turn == point.turn }?.checkpoints
            rows.append([
                "\(point.turn)", fmt(Double(point.bytes) / 1024, 1), fmt(point.bytesPerTurn), fmt(point.marginalBytesPerTurn(after: previous)),
                fmt(Double(point.payloadBytes ?? 0) / 1024, 0),
                peer.map { fmt(Double($0.bytes) / 1024, 1) + ($0.measured ? "" : " (fit)") } ?? "-",
                peer.map { fmt($0.bytesPerTurn) } ?? "-",
                peer.map { fmt($0.marginalBytesPerTurn(after: peerPrevious)) } ?? "-",
                checkpoints.map(String.init) ?? "-",
                peer.map { String(format: "%.1f", Double($0.bytes) / Double(point.bytes)) } ?? "-",
            ])
        }
        out += table(["turns", "stasis KiB", "B/turn", "B/turn since last", "payload KiB", "langgraph KiB", "B/turn",
                      "B/turn since last", "checkpoints", "langgraph/stasis"], rows)
        if let g = langGraph {
            out += "\nLangGraph \(g.langgraph ?? "?"), langgraph-checkpoint-sqlite \(g.langgraphCheckpointSqlite ?? "?"), "
            out += "langchain-core \(g.langchainCore ?? "?"), Python \(g.python), SQLite \(g.sqlite), durability \(g.durability), state \(g.state ?? "messages"); "
            out += "\(g.points.last.map { "\($0.turn) turns took \(fmt($0.seconds, 1)) s" } ?? "")"
            if langGraphStorage.contains(where: { !$0.measured }) {
                out += "\n(fit): not run that far within --peer-max-seconds; empty size + a*t^2 + b*t fitted to the measured points"
            }
        } else {
            out += "\nLangGraph peer not run (see above; install with `\(LangGraphPeer.install)`)"
        }
        out += "\nReading the whole \(turns)-turn session back (records(session:), every checksum checked): "
        out += "median \(fmt(fullRead.median, 1)) ms (\(rangeText(fullRead, 1)))"
        out += "\n\n" + Figure.verdict(figures)
        return out
    }
}
