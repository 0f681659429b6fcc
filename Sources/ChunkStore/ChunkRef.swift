/// A chunk in the store: the SHA-256 of its uncompressed bytes, their length, and the length of
/// the compressed frame on disk.
public struct ChunkRef: Codable, Hashable, Sendable {
    /// SHA-256 of the uncompressed bytes, 64 lowercase hex digits; also the chunk's file name.
    public var hash: String
    /// Length of the uncompressed bytes.
    public var rawSize: Int
    /// Length of the compressed frame as stored.
    public var storedSize: Int

    /// A reference to chunk `hash`.
    public init(hash: String, rawSize: Int, storedSize: Int) {
        self.hash = hash
        self.rawSize = rawSize
        self.storedSize = storedSize
    }
}
