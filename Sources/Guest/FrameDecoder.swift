/// Cuts a byte stream into frame bodies. After garbage (the tail of a frame whose writer went
/// away) it skips ahead to the next magic, so a new connection always finds its footing.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0
    /// Bytes thrown away while looking for a frame; for diagnostics.
    public private(set) var skippedBytes = 0

    public init() {}

    /// Adds bytes that arrived.
    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 1 << 20 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// Forgets everything buffered (a new peer connected).
    public mutating func reset() {
        buffer.removeAll(keepingCapacity: true)
        start = 0
    }

    /// The next complete frame body, or nil if more bytes are needed.
    public mutating func next() -> [UInt8]? {
        let magic = AgentProtocol.magic
        while buffer.count - start >= 8 {
            if buffer[start] != magic[0] || buffer[start + 1] != magic[1]
                || buffer[start + 2] != magic[2] || buffer[start + 3] != magic[3] {
                start += 1
                skippedBytes += 1
                continue
            }
            let length = Int(buffer[start + 4]) | Int(buffer[start + 5]) << 8
                | Int(buffer[start + 6]) << 16 | Int(buffer[start + 7]) << 24
            guard length >= 5, length <= AgentProtocol.maxBodyLength else {
                start += 1
                skippedBytes += 1
                continue
            }
            guard buffer.count - start >= 8 + length else { return nil }
            let body = Array(buffer[start + 8 ..< start + 8 + length])
            start += 8 + length
            return body
        }
        return nil
    }
}
