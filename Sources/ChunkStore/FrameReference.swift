import Crypto
import Foundation
import StasisCore

/// A file the host keeps anyway whose bytes reappear at known offsets of the files being cut
/// (the guest kernel, loaded into guest RAM at its physical addresses). A frame that lies inside
/// one of those places is stored as a delta against the reference's bytes there: the kernel
/// pages every snapshot holds cost what the guest changed in them, not their compressed size.
public struct FrameReference: Sendable {
    /// Where the reference's bytes appear in the cut file.
    public struct Segment: Equatable, Sendable {
        /// Offset in the cut file.
        public var offset: Int
        /// Offset in the reference file.
        public var fileOffset: Int
        /// Length in bytes.
        public var length: Int

        /// Bytes `fileOffset..<fileOffset+length` of the reference appear at `offset`.
        public init(offset: Int, fileOffset: Int, length: Int) {
            self.offset = offset
            self.fileOffset = fileOffset
            self.length = length
        }
    }

    /// What a frame list records of its reference: enough to tell the right file from another.
    public struct Identity: Equatable, Sendable {
        /// "sha256:" and the hex digest of the whole reference file.
        public var digest: String
        /// Where its bytes appear, ascending and not overlapping.
        public var segments: [Segment]

        /// An identity; `FrameList` checks it.
        public init(digest: String, segments: [Segment]) {
            self.digest = digest
            self.segments = segments
        }

        /// The reference's offset for the frame at `offset` of `length` bytes, if the whole
        /// frame lies inside one segment.
        public func fileOffset(forFrameAt offset: Int, length: Int) -> Int? {
            for segment in segments where offset >= segment.offset && offset + length <= segment.offset + segment.length {
                return segment.fileOffset + (offset - segment.offset)
            }
            return nil
        }
    }

    /// The reference file.
    public let url: URL
    /// Its digest and where its bytes appear.
    public let identity: Identity

    /// A reference to `url`, whose content has `digest`, laid out as `segments`.
    public init(url: URL, digest: String, segments: [Segment]) {
        self.url = url
        self.identity = Identity(digest: digest, segments: segments.sorted { $0.offset < $1.offset })
    }

    /// Reads the reference's bytes for the frame at `offset` into `buffer` (whose size is the
    /// frame's length); false when the frame is not inside a segment.
    func read(forFrameAt offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        guard let fileOffset = identity.fileOffset(forFrameAt: offset, length: buffer.count),
              let start = buffer.baseAddress else { return false }
        let fd = try FileIO.openForReading(url.path)
        defer { close(fd) }
        let got = try FileIO.read(fd, into: start, count: buffer.count, at: fileOffset)
        guard got == buffer.count else {
            throw StasisError(.corrupted, "\(url.path) is shorter than the snapshot it is a reference of expects: \(got) of \(buffer.count) bytes at \(fileOffset)")
        }
        return true
    }
}

extension FrameReference {
    /// The same reference with its segments cut to a file of `size` bytes.
    public func clipped(to size: Int) -> FrameReference {
        let segments = identity.segments.compactMap { segment -> Segment? in
            let length = min(segment.length, size - segment.offset)
            return length > 0 ? Segment(offset: segment.offset, fileOffset: segment.fileOffset, length: length) : nil
        }
        return FrameReference(url: url, digest: identity.digest, segments: segments)
    }

    /// "sha256:" and the hex SHA-256 of the whole file at `url`.
    public static func digest(of url: URL) throws -> String {
        let fd = try FileIO.openForReading(url.path)
        defer { close(fd) }
        let size = try FileIO.size(fd, path: url.path)
        var hasher = SHA256()
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        guard let start = buffer.baseAddress else { return "" }
        var offset = 0
        while offset < size {
            let got = try FileIO.read(fd, into: start, count: min(chunk, size - offset), at: offset)
            guard got > 0 else { throw StasisError(.ioFailure, "\(url.path) ended at \(offset) of \(size) bytes") }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0 ..< got]))
            offset += got
        }
        return "sha256:" + Hex.encode(hasher.finalize())
    }
}
