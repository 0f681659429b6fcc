import Foundation
import StasisCore

/// Writes the members of a tar stream (as `FrameWriter` makes it) into a folder as the bytes
/// arrive. Only the expected file names are accepted; blocks of zeros become holes, so a memory
/// file comes back as sparse as it left.
struct TarStreamParser {
    private enum Position {
        case header
        case data(name: String, size: UInt64, written: UInt64, handle: FileHandle)
        case padding(Int)
        case end
    }

    let directory: URL
    let allowed: Set<String>
    private var position = Position.header
    private var pending: [UInt8] = []
    private var seen: Set<String> = []

    init(directory: URL, allowed: Set<String>) {
        self.directory = directory
        self.allowed = allowed
    }

    /// Consumes the next bytes of the stream.
    mutating func feed(_ bytes: [UInt8]) throws {
        var input = bytes[...]
        while !input.isEmpty {
            switch position {
            case .end:
                guard isAllZero(input) else { throw StasisError(.corrupted, "the archive has data after its end") }
                return
            case .header:
                let take = min(ArchiveTar.block - pending.count, input.count)
                pending += input.prefix(take)
                input = input.dropFirst(take)
                guard pending.count == ArchiveTar.block else { continue }
                defer { pending = [] }
                guard let (name, size) = try ArchiveTar.parse(pending[...]) else { position = .end; continue }
                guard allowed.contains(name), !seen.contains(name) else {
                    throw StasisError(.corrupted, "the archive holds an unexpected member '\(name)'")
                }
                seen.insert(name)
                let url = directory.appendingPathComponent(name)
                guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                    throw StasisError(.ioFailure, "cannot create \(url.path)")
                }
                position = .data(name: name, size: size, written: 0, handle: try FileHandle(forWritingTo: url))
                if size == 0 { try closeFile() }
            case .data(let name, let size, let written, let handle):
                let take = Int(min(UInt64(input.count), size - written))
                let chunk = input.prefix(take)
                // 4 KiB blocks of zeros are skipped (holes); the file is truncated to its size at the end.
                var offset = written
                var rest = chunk
                while !rest.isEmpty {
                    let piece = rest.prefix(4096 - Int(offset % 4096))
                    if !isAllZero(piece) {
                        try handle.seek(toOffset: offset)
                        try handle.write(contentsOf: Data(piece))
                    }
                    offset += UInt64(piece.count)
                    rest = rest.dropFirst(piece.count)
                }
                input = input.dropFirst(take)
                position = .data(name: name, size: size, written: written + UInt64(take), handle: handle)
                if written + UInt64(take) == size { try closeFile() }
            case .padding(let left):
                let take = min(left, input.count)
                input = input.dropFirst(take)
                position = left - take == 0 ? .header : .padding(left - take)
            }
        }
    }

    /// Checks that the stream ended where a tar stream ends.
    func finish() throws {
        guard case .end = position else { throw StasisError(.corrupted, "the archive is truncated") }
        for name in ["manifest.json", "state", "disk.qcow2"] where !seen.contains(name) {
            throw StasisError(.corrupted, "the archive has no \(name)")
        }
    }

    private mutating func closeFile() throws {
        guard case .data(_, let size, _, let handle) = position else { return }
        try handle.truncate(atOffset: size)
        try handle.synchronize()
        try handle.close()
        let padding = ArchiveTar.padding(size)
        position = padding == 0 ? .header : .padding(padding)
    }
}
