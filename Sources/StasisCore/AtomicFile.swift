import Foundation

/// Crash-safe file replacement: write a temporary file, fsync it, rename it over the target,
/// fsync the folder. A reader sees the old file or the new one, never a mix.
public enum AtomicFile {
    /// Writes `data` to `url` atomically and durably.
    public static func write(_ data: Data, to url: URL, mode: mode_t = 0o644) throws {
        let dir = url.deletingLastPathComponent()
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(UInt32.random(in: 0 ... .max))")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot create \(tmp.path)", cause: Errno()) }
        do {
            try data.withUnsafeBytes { raw in
                guard let base = raw.baseAddress else { return }
                var offset = 0
                while offset < raw.count {
                    let n = Foundation.write(fd, base + offset, raw.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw StasisError(.ioFailure, "cannot write \(tmp.path)", cause: Errno())
                    }
                    offset += n
                }
            }
            guard fsync(fd) == 0 else { throw StasisError(.ioFailure, "cannot fsync \(tmp.path)", cause: Errno()) }
            close(fd)
        } catch {
            close(fd)
            unlink(tmp.path)
            throw error
        }
        try rename(tmp, over: url)
    }

    /// Encodes `value` as pretty, sorted JSON and writes it atomically.
    public static func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try write(encoder.encode(value), to: url)
    }

    /// Reads JSON written by `writeJSON`.
    public static func readJSON<T: Decodable>(_ type: T.Type, from url: URL) throws -> T {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw StasisError(.notFound, "cannot read \(url.path)", cause: error)
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do { return try decoder.decode(T.self, from: data) } catch {
            throw StasisError(.corrupted, "\(url.path) is not valid", cause: error)
        }
    }

    /// Renames `source` over `target` (file or folder) and fsyncs the target's folder.
    public static func rename(_ source: URL, over target: URL) throws {
        guard Foundation.rename(source.path, target.path) == 0 else {
            let err = Errno()
            unlink(source.path)
            throw StasisError(.ioFailure, "cannot rename \(source.path) to \(target.path)", cause: err)
        }
        try syncDirectory(target.deletingLastPathComponent())
    }

    /// fsyncs a folder so that entries created or renamed in it survive a crash.
    public static func syncDirectory(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open folder \(url.path)", cause: Errno()) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StasisError(.ioFailure, "cannot fsync folder \(url.path)", cause: Errno()) }
    }

    /// fsyncs one file.
    public static func syncFile(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open \(url.path)", cause: Errno()) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StasisError(.ioFailure, "cannot fsync \(url.path)", cause: Errno()) }
    }
}
