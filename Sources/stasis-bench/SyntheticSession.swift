import Context
import Foundation

/// A deterministic agent session of many turns (see `SyntheticTurn`): the records the context
/// log stores, and the same messages as JSON for the LangGraph peer.
struct SyntheticSession {
    let turns: [SyntheticTurn]

    init(turns count: Int, seed: UInt64 = 0x5_7A515) {
        var text = SeededText(seed: seed)
        let machine = "bench-\(text.hex(4))-session"
        let snapshot = text.hex(12)
        turns = (0 ..< count).map { SyntheticTurn(index: $0, machine: machine, snapshot: snapshot, text: &text) }
    }

    /// Turn `index`'s records for `session`.
    func records(turn index: Int, session: String) throws -> [NewRecord] {
        try turns[index].records(session: session)
    }

    /// `count` records for the throughput sides: the session's records in order, repeated if needed,
    /// so appends carry the size mix of a real session.
    func recordMix(count: Int, session: String) throws -> [NewRecord] {
        var out: [NewRecord] = []
        out.reserveCapacity(count)
        var turn = 0
        while out.count < count {
            out += try records(turn: turn % turns.count, session: session)
            turn += 1
        }
        return Array(out.prefix(count))
    }

    /// The messages of every turn as JSON, the input of scripts/bench/langgraph_storage.py.
    func langGraphInput() throws -> Data {
        try JSONEncoder().encode(turns)
    }
}
