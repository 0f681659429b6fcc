extension ContextLog {
    /// The records of `session` after `seq`, then every record appended later, as it is committed.
    /// Reads in pages as the consumer asks, so a slow reader holds one page, not the whole log.
    public func tail(session: String, after seq: Int64 = 0) -> ContextTail {
        ContextTail(log: self, session: session, after: seq)
    }
}

extension ContextLog {
    /// The next page of `session`'s records after `seq`; if there are none yet, waits for an
    /// append, at most `timeout` (forever when nil), and returns an empty page if none came.
    /// A long poll: readers that must notice a vanished client (server-sent events) wake up
    /// regularly to check.
    public func nextPage(session: String, after seq: Int64, limit: Int = 500, waitingUpTo timeout: Duration?) async throws -> [ContextRecord] {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            // Take the generation before reading: an append that lands after the read moves it
            // on, and the wait below returns at once.
            let generation = signal.generation(session)
            let page = try records(session: session, after: seq, limit: limit)
            if !page.isEmpty || Task.isCancelled { return page }
            if let deadline {
                guard await signal.wait(session, after: generation, until: deadline) else { return [] }
            } else {
                await signal.wait(session, after: generation)
            }
        }
    }
}

/// An endless sequence of a session's records; ends when the consuming task is cancelled, and
/// throws `.corrupted` on a damaged record.
public struct ContextTail: AsyncSequence, Sendable {
    public typealias Element = ContextRecord

    let log: ContextLog
    let session: String
    let after: Int64

    public func makeAsyncIterator() -> Iterator {
        Iterator(log: log, session: session, last: after)
    }

    /// Pulls one page of records at a time and waits for appends when it has read everything.
    public struct Iterator: AsyncIteratorProtocol {
        let log: ContextLog
        let session: String
        var last: Int64
        var page: [ContextRecord] = []
        var index = 0

        public mutating func next() async throws -> ContextRecord? {
            while index == page.count {
                if Task.isCancelled { return nil }
                page = try await log.nextPage(session: session, after: last, waitingUpTo: nil)
                index = 0
            }
            let record = page[index]
            index += 1
            last = record.seq
            return record
        }
    }
}
