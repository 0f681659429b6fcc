import Foundation
import StasisCore

extension ChunkedFile {
    /// Exports the file in the zstd seekable format, with XXH64 checksums in the seek table: one
    /// frame per frame of the list, the stored chunk frames copied as they are (each checked
    /// against its hash first), and a compressed frame of zeros for every zero frame so that
    /// `zstd -d` gives back every byte. Any reader of the format can then fetch frame i alone.
    public func exportSeekable(to url: URL) throws {
        guard frames.frameCount <= SeekTable.maxFrames else {
            throw StasisError(.invalidArgument, "\(frames.frameCount) frames exceed the seekable format's \(SeekTable.maxFrames)")
        }
        let codec = try Zstd()
        let writer = try SeekableWriter(url: url, checksums: true)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: frames.frameSize, alignment: 4096)
        defer { buffer.deallocate() }
        // Zero frames all compress to the same few bytes: two sizes at most (the last frame may be short).
        var zeroFrames: [Int: (frame: [UInt8], checksum: UInt32)] = [:]
        var position = 0
        for index in 0 ..< frames.frameCount {
            let rawSize = frames.rawSize(ofFrame: index)
            if position < frames.nonZeroFrames.count, frames.nonZeroFrames[position] == index {
                let ref = frames.ref(at: position)
                let rewritten = !frames.patches(at: position).isEmpty || frames.isDelta(at: position)
                var stored: [UInt8]
                if rewritten {
                    // The stored chunk is not this frame's content, or needs a reference to
                    // read: compress the frame anew.
                    try load(position: position, into: buffer, codec: codec, check: .name)
                    stored = try codec.compress(UnsafeRawBufferPointer(rebasing: buffer[0 ..< rawSize]), level: store.level)
                } else {
                    do { stored = try store.load(ref, into: buffer, codec: codec) } catch {
                        throw ChunkedFile.frameError(index, ref, error)
                    }
                }
                position += 1
                let checksum = XXH64.checksum32(UnsafeRawBufferPointer(rebasing: buffer[0 ..< rawSize]))
                try writer.append(frame: stored, decompressedSize: rawSize, checksum: checksum)
            } else {
                let zero: (frame: [UInt8], checksum: UInt32)
                if let cached = zeroFrames[rawSize] {
                    zero = cached
                } else {
                    let zeros = [UInt8](repeating: 0, count: rawSize)
                    zero = (try codec.compress(zeros, level: store.level), zeros.withUnsafeBytes(XXH64.checksum32))
                    zeroFrames[rawSize] = zero
                }
                try writer.append(frame: zero.frame, decompressedSize: rawSize, checksum: zero.checksum)
            }
        }
        try writer.finish()
    }
}
