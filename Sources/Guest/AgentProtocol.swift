/// Constants of the host↔guest agent protocol, version 3 (docs/guest-agent.md describes it).
///
/// Every message travels in a frame: 4 bytes magic "STAS", a little-endian `UInt32` body length,
/// the body (one kind byte, a little-endian `UInt32` request id, the kind's fields), then the
/// CRC-32 of length and body. The magic and the CRC let either side find its footing again after
/// a peer vanished mid-frame.
public enum AgentProtocol {
    /// The protocol version both sides announce in `hello`. Version 2 added `zeroFreeMemory`;
    /// version 3 `readClock` and `shiftClock`.
    public static let version: UInt16 = 3
    /// "STAS" as it appears on the wire.
    public static let magic: [UInt8] = [0x53, 0x54, 0x41, 0x53]
    /// The largest body a peer accepts; anything larger is treated as line noise.
    public static let maxBodyLength = 8 << 20
    /// The largest chunk of process output or file data in one frame.
    public static let maxChunk = 64 << 10
    /// The virtio-serial ports the agent serves; each carries one host connection at a time.
    public static let portNames = ["agent0", "agent1", "agent2", "agent3"]
}
