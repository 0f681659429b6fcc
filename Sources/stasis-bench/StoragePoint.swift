/// The size of a stored session after `turn` turns.
struct StoragePoint: Codable {
    var turn: Int
    var bytes: Int64
    /// Bytes the messages themselves take (JSON bodies for the context log), for the overhead.
    var payloadBytes: Int64?
    /// False for a size fitted from the measured points rather than measured.
    var measured = true

    var bytesPerTurn: Double { turn > 0 ? Double(bytes) / Double(turn) : .nan }

    /// Bytes per turn added since `previous`: constant when storage grows linearly, rising with
    /// the turn when each turn stores the whole conversation again.
    func marginalBytesPerTurn(after previous: StoragePoint?) -> Double {
        guard let previous, turn > previous.turn else { return .nan }
        return Double(bytes - previous.bytes) / Double(turn - previous.turn)
    }
}
