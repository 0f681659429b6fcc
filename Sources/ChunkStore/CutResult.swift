/// What cutting a file produced: its frame list and what it cost the store.
public struct CutResult: Sendable {
    /// The file's frames.
    public let frames: FrameList
    /// Chunks this cut wrote (distinct hashes not stored before).
    public let newChunks: Int
    /// Stored bytes of those new chunks: what the cut added to the store.
    public let newBytes: Int
    /// Non-zero frames whose chunk was already stored, by an earlier cut or an earlier frame.
    public let reusedFrames: Int
    /// Non-zero frames stored as an earlier frame's chunk plus the pages that differ.
    public let patchedFrames: Int
    /// All-zero frames, holes included; none of them is stored.
    public let zeroFrames: Int
    /// Bytes read from the file: its data regions, rounded out to whole frames.
    public let bytesRead: Int
}
