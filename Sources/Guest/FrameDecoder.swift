/// Cuts a byte stream into frame bodies, checking each frame's CRC.
///
/// A new connection may start with the remains of an earlier one: the tail of a frame, or the
/// head of a frame whose writer vanished. Until the peer's hello has been seen the decoder is
/// *scanning*: it accepts only complete, checksummed frames and, when the frame in front of it is
/// incomplete, looks past it for a complete one (a stale head would otherwise swallow the real
/// frames behind it). Once `markSynchronized()` is called it trusts frame boundaries and waits
/// for frames to complete, as a live peer writes them whole.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0
    private var synchronized = false
    /// Scanning mode: where the search for later frame headers stopped, and the headers found.
    private var scannedUpTo = 0
    private var candidates: [Int] = []
    /// Bytes thrown away while looking for a frame; for diagnostics.
    public private(set) var skippedBytes = 0

    public init() {}

    /// Adds bytes that arrived.
    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            rebase(start)
        } else if start > 1 << 20 {
            buffer.removeFirst(start)
            rebase(start)
        }
        buffer.append(contentsOf: bytes)
    }

    private mutating func rebase(_ by: Int) {
        start -= by
        scannedUpTo = max(0, scannedUpTo - by)
        candidates = candidates.map { $0 - by }.filter { $0 >= 0 }
    }

    /// Forgets everything buffered and starts scanning again (a new peer connected).
    public mutating func reset() {
        buffer.removeAll(keepingCapacity: true)
        start = 0
        synchronized = false
        scannedUpTo = 0
        candidates = []
    }

    /// The peer's hello was seen: from now on frames arrive whole and in order.
    public mutating func markSynchronized() {
        synchronized = true
        candidates = []
    }

    private enum Probe { case frame(body: Range<Int>, end: Int), incomplete, invalid }

    private func hasMagic(at i: Int) -> Bool {
        let m = AgentProtocol.magic
        return buffer.count - i >= 4 && buffer[i] == m[0] && buffer[i + 1] == m[1] && buffer[i + 2] == m[2] && buffer[i + 3] == m[3]
    }

    private func claimedLength(at i: Int) -> Int? {
        guard buffer.count - i >= 8, hasMagic(at: i) else { return nil }
        let length = Int(buffer[i + 4]) | Int(buffer[i + 5]) << 8 | Int(buffer[i + 6]) << 16 | Int(buffer[i + 7]) << 24
        return length >= 5 && length <= AgentProtocol.maxBodyLength ? length : nil
    }

    /// Looks at a possible frame starting at `at`.
    private func probe(_ at: Int) -> Probe {
        guard buffer.count - at >= 8 else { return .incomplete }
        guard let length = claimedLength(at: at) else { return .invalid }
        let end = at + 8 + length + 4
        guard buffer.count >= end else { return .incomplete }
        let stored = UInt32(buffer[end - 4]) | UInt32(buffer[end - 3]) << 8 | UInt32(buffer[end - 2]) << 16 | UInt32(buffer[end - 1]) << 24
        guard CRC32.checksum(buffer[at + 4 ..< end - 4]) == stored else { return .invalid }
        return .frame(body: at + 8 ..< end - 4, end: end)
    }

    /// The next complete frame body, or nil if more bytes are needed.
    public mutating func next() -> [UInt8]? {
        while buffer.count - start >= 8 {
            switch probe(start) {
            case .frame(let body, let end):
                let out = Array(buffer[body])
                start = end
                return out
            case .invalid:
                start += 1
                skippedBytes += 1
            case .incomplete:
                guard !synchronized, let later = laterCompleteFrame() else { return nil }
                skippedBytes += later - start
                start = later
            }
        }
        return nil
    }

    /// Scanning mode: the first complete, checksummed frame after `start`. Each byte is searched
    /// for a header once and each header checked once it is complete, so a long stream costs
    /// linear time.
    private mutating func laterCompleteFrame() -> Int? {
        var i = max(scannedUpTo, start + 1)
        while i + 8 <= buffer.count {
            if claimedLength(at: i) != nil { candidates.append(i) }
            i += 1
        }
        scannedUpTo = i
        candidates.removeAll { $0 <= start }
        var index = 0
        while index < candidates.count {
            switch probe(candidates[index]) {
            case .frame: return candidates[index]
            case .invalid: candidates.remove(at: index)
            case .incomplete: index += 1
            }
        }
        return nil
    }
}
