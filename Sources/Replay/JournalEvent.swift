import Foundation

/// One journaled event of a workflow run: append-only, checksummed.
public struct JournalEvent: Sendable, Equatable {
    /// What an event records.
    public enum Kind: String, Sendable, Codable {
        /// A step finished; the payload is its result as JSON.
        case step
        /// A durable sleep began; the payload holds the wake-up time.
        case sleep
        /// The run ended with `continueAsNew`; the payload is the next run's input.
        case continuedAsNew
    }

    /// The workflow id.
    public let workflowID: String
    /// The run number within the workflow id.
    public let run: Int
    /// Position in the run's history, from 1.
    public let seq: Int
    /// What this event records.
    public let kind: Kind
    /// The step's name (for a sleep: "sleep").
    public let step: String
    /// JSON payload.
    public let payload: String
    /// When the event was journaled.
    public let time: Date
    /// CRC-32 of the other fields, hex.
    public let checksum: String

    /// The checksum these fields should carry.
    static func checksum(workflowID: String, run: Int, seq: Int, kind: Kind, step: String, payload: String) -> String {
        var crc = CRC32()
        crc.update("\(workflowID)\u{0}\(run)\u{0}\(seq)\u{0}\(kind.rawValue)\u{0}\(step)\u{0}\(payload)")
        return String(format: "%08x", crc.value)
    }

    /// Whether the stored checksum matches the fields.
    var isIntact: Bool {
        checksum == Self.checksum(workflowID: workflowID, run: run, seq: seq, kind: kind, step: step, payload: payload)
    }
}
