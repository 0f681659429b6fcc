import Foundation
import StasisCore

/// A secret API key. It prints as "<redacted>" everywhere, so that it cannot leak into an error,
/// a log line or a description by accident.
public struct APIKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The key itself; only the providers read it, to put it in a request header.
    let secret: String

    /// Wraps a key held in memory; surrounding whitespace (a file's newline) is dropped.
    public init(_ secret: String) {
        self.secret = secret.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    /// No children, so that `dump` and reflection show no secret either.
    public var customMirror: Mirror { Mirror(self, children: [:]) }

    /// The key in the environment variable `name`.
    public static func fromEnvironment(_ name: String) throws -> APIKey {
        guard let value = ProcessInfo.processInfo.environment[name] else {
            throw StasisError(.invalidArgument, "environment variable \(name) is not set; it should hold the API key")
        }
        let key = APIKey(value)
        guard !key.secret.isEmpty else {
            throw StasisError(.invalidArgument, "environment variable \(name) is empty; it should hold the API key")
        }
        return key
    }

    /// The key in the file at `path`, which only its owner may read (mode 0600 or 0400).
    public static func fromFile(_ path: String) throws -> APIKey {
        // Open first and check the mode of what was opened, so the file checked is the file read.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let error = Errno()
            let code: StasisError.Code = error.value == ENOENT ? .notFound : .ioFailure
            throw StasisError(code, "cannot open API key file \(path)", cause: error)
        }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw StasisError(.ioFailure, "cannot stat API key file \(path)", cause: Errno())
        }
        let permissions = UInt32(info.st_mode) & 0o777
        guard permissions == 0o600 || permissions == 0o400 else {
            throw StasisError(
                .invalidArgument,
                "API key file \(path) has mode 0\(String(permissions, radix: 8)), so users other than its owner "
                    + "may read it; run `chmod 600 \(path)`")
        }
        let data: Data
        do {
            data = try handle.readToEnd() ?? Data()
        } catch {
            throw StasisError(.ioFailure, "cannot read API key file \(path)", cause: error)
        }
        let key = APIKey(String(decoding: data, as: UTF8.self))
        guard !key.secret.isEmpty else {
            throw StasisError(.invalidArgument, "API key file \(path) is empty")
        }
        return key
    }

    /// `text` with every occurrence of the key replaced by "<redacted>", for text that came from a
    /// server, which may echo the key back.
    func redact(_ text: String) -> String {
        guard !secret.isEmpty else { return text }
        return text.replacingOccurrences(of: secret, with: "<redacted>")
    }
}
