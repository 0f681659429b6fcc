/// What scripts/bench/langgraph_storage.py printed: LangGraph's SQLite checkpointer holding the
/// same conversation, measured at each turn count it reached.
struct LangGraphResult: Codable {
    var points: [Point]
    var messages: Int
    var durability: String
    /// "messages" (MessagesState) or "delta" (the experimental DeltaChannel).
    var state: String?
    var sqlite: String
    var python: String
    var langgraph: String?
    var langgraphCheckpointSqlite: String?
    var langchainCore: String?

    struct Point: Codable {
        var turn: Int
        var bytes: Int64
        var checkpoints: Int
        var writes: Int
        var seconds: Double
    }

    /// The measured sizes, then the missing ones of `turns` fitted as y₀ + a·t² + b·t (least
    /// squares over the measured points after the empty one, y₀; marked not measured).
    func storage(at turns: [Int]) -> [StoragePoint] {
        let measured = points.map { StoragePoint(turn: $0.turn, bytes: $0.bytes) }
        let base = Double(measured.first { $0.turn == 0 }?.bytes ?? 0)
        let grown = measured.filter { $0.turn > 0 }
        guard grown.count >= 2 else { return measured }
        // Normal equations of y - y₀ = a t² + b t.
        var s4 = 0.0, s3 = 0.0, s2 = 0.0, s2y = 0.0, s1y = 0.0
        for p in grown {
            let t = Double(p.turn), y = Double(p.bytes) - base
            s4 += t * t * t * t; s3 += t * t * t; s2 += t * t
            s2y += t * t * y; s1y += t * y
        }
        let det = s4 * s2 - s3 * s3
        guard det != 0 else { return measured }
        let a = (s2y * s2 - s3 * s1y) / det
        let b = (s4 * s1y - s3 * s2y) / det
        let fitted = turns.filter { t in !measured.contains { $0.turn == t } }.map { t in
            StoragePoint(turn: t, bytes: Int64((base + a * Double(t) * Double(t) + b * Double(t)).rounded()), measured: false)
        }
        return (measured + fitted).sorted { $0.turn < $1.turn }
    }
}
