/// One measured side of `stasis-bench context`; each has a Stasis and a baseline variant except
/// the hardware floor.
enum ContextSide: String, CaseIterable, Encodable {
    case single, rawSingle, concurrent, rawConcurrent, batch100, rawBatch100, batch1000, rawBatch1000, fsyncFloor

    var isBaseline: Bool {
        switch self {
        case .rawSingle, .rawConcurrent, .rawBatch100, .rawBatch1000, .fsyncFloor: true
        default: false
        }
    }

    var label: String {
        switch self {
        case .single: "context log, 1 writer"
        case .rawSingle: "raw SQLite, 1 writer"
        case .concurrent: "context log, concurrent sessions"
        case .rawConcurrent: "raw SQLite, concurrent sessions"
        case .batch100: "context log, batches of 100"
        case .rawBatch100: "raw SQLite, batches of 100"
        case .batch1000: "context log, batches of 1000"
        case .rawBatch1000: "raw SQLite, batches of 1000"
        case .fsyncFloor: "4 KiB page + fdatasync, in place"
        }
    }
}
