/// One side of one round of the context benchmark: throughput, and latency percentiles of each
/// append (each batch, for the batched sides), in milliseconds.
struct AppendRun: Encodable {
    var appends: Int
    var appendsPerSecond: Double
    var p50: Double
    var p99: Double
    var max: Double

    init(appends: Int, seconds: Double, latencies: [Double]) {
        let latency = Latency(latencies)
        self.appends = appends
        appendsPerSecond = Double(appends) / seconds
        p50 = latency.p50
        p99 = latency.p99
        max = latency.max
    }
}
