/// Appends protocol fields to a byte buffer, little-endian.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func data(_ v: [UInt8]) { u32(UInt32(v.count)); bytes.append(contentsOf: v) }
    public mutating func data(_ v: ArraySlice<UInt8>) { u32(UInt32(v.count)); bytes.append(contentsOf: v) }
    public mutating func string(_ v: String) { data(Array(v.utf8)) }
    public mutating func strings(_ v: [String]) { u32(UInt32(v.count)); for s in v { string(s) } }
}

/// Reads protocol fields from a frame body; every read checks bounds and throws on truncation.
public struct WireReader: Sendable {
    private let bytes: [UInt8]
    private var offset: Int

    public init(_ bytes: [UInt8]) { self.bytes = bytes; self.offset = 0 }

    /// Bytes not read yet.
    public var remaining: Int { bytes.count - offset }

    private mutating func take(_ n: Int) throws(ProtocolError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else { throw ProtocolError.truncated }
        defer { offset += n }
        return bytes[offset ..< offset + n]
    }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(ProtocolError) -> T {
        let slice = try take(MemoryLayout<T>.size)
        var v: T = 0
        for (i, b) in slice.enumerated() { v |= T(b) << (8 * i) }
        return v
    }

    public mutating func u8() throws(ProtocolError) -> UInt8 { try integer(UInt8.self) }
    public mutating func bool() throws(ProtocolError) -> Bool { try u8() != 0 }
    public mutating func u16() throws(ProtocolError) -> UInt16 { try integer(UInt16.self) }
    public mutating func u32() throws(ProtocolError) -> UInt32 { try integer(UInt32.self) }
    public mutating func u64() throws(ProtocolError) -> UInt64 { try integer(UInt64.self) }
    public mutating func i32() throws(ProtocolError) -> Int32 { Int32(bitPattern: try u32()) }
    public mutating func i64() throws(ProtocolError) -> Int64 { Int64(bitPattern: try u64()) }
    public mutating func data() throws(ProtocolError) -> [UInt8] { Array(try take(Int(try u32()))) }
    public mutating func string() throws(ProtocolError) -> String {
        let raw = try data()
        guard let s = String(validating: raw, as: UTF8.self) else { throw ProtocolError.invalidString }
        return s
    }
    public mutating func strings() throws(ProtocolError) -> [String] {
        let n = Int(try u32())
        guard n <= remaining / 4 else { throw ProtocolError.truncated }
        var out: [String] = []
        out.reserveCapacity(n)
        for _ in 0 ..< n { out.append(try string()) }
        return out
    }
}

/// Why a frame could not be decoded.
public enum ProtocolError: Error, Equatable, Sendable {
    case truncated
    case invalidString
    case unknownKind(UInt8)
    case trailingBytes(Int)
}
