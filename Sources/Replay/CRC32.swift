/// CRC-32 (IEEE), for event checksums.
struct CRC32 {
    private static let table: [UInt32] = (0 ..< 256).map { i in
        var c = UInt32(i)
        for _ in 0 ..< 8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    private var crc: UInt32 = 0xFFFF_FFFF

    /// Feeds the UTF-8 bytes of `text`.
    mutating func update(_ text: String) {
        for byte in text.utf8 { crc = Self.table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
    }

    /// The checksum of everything fed so far.
    var value: UInt32 { crc ^ 0xFFFF_FFFF }
}
