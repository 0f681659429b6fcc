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

/// How a chunk read is checked.
public enum ChunkCheck: Sendable {
    /// Against its name, the SHA-256 of its bytes (and prefix, for a delta): catches any change,
    /// a valid frame of other bytes put in its place included. `verify` and `get` use it.
    case name
    /// Against the content checksum zstd keeps in every frame Stasis writes (XXH64 of the
    /// decompressed bytes, checked by the decompressor as it goes), falling back to the name
    /// for a frame without one. It catches damage, and a delta read against other bytes than
    /// it was made from, for a fraction of the cost: restores use it.
    case frameChecksum
}
