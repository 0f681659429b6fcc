/// One side's results over all rounds: medians of each round's throughput and percentiles.
struct AppendFigures: Encodable {
    var runs: [AppendRun]
    var appendsPerSecond: Summary
    var p50: Summary
    var p99: Summary
    var max: Summary

    init(_ runs: [AppendRun]) {
        self.runs = runs
        appendsPerSecond = Summary(runs.map(\.appendsPerSecond))
        p50 = Summary(runs.map(\.p50))
        p99 = Summary(runs.map(\.p99))
        max = Summary(runs.map(\.max))
    }
}
