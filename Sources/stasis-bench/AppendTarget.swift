import Context

/// Something the context benchmark appends records to: the context log, or the raw SQLite
/// baseline. Both sides go through the same timing code.
protocol AppendTarget: Sendable {
    /// Appends one record and returns once it is durable.
    func appendOne(_ record: NewRecord) async throws
    /// Appends records in one durable transaction.
    func appendBatch(_ records: [NewRecord]) throws
}

extension ContextLog: AppendTarget {
    func appendOne(_ record: NewRecord) async throws {
        try await append(record)
    }

    func appendBatch(_ records: [NewRecord]) throws {
        try append(contentsOf: records)
    }
}
