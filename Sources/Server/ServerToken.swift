import Foundation
import StasisCore

/// The API's bearer token: made on the server's first start, kept in a file only its owner can read.
public enum ServerToken {
    /// `$STASIS_HOME/server/token`.
    public static func file(home: StasisHome) -> URL {
        home.root.appendingPathComponent("server/token")
    }

    /// The token in `file`, made (32 random bytes, hex) and written with mode 0600 if there is none.
    public static func loadOrCreate(home: StasisHome) throws -> String {
        let url = file(home: home)
        if let existing = try? load(url) { return existing }
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = generator.next() }
        let token = bytes.map { String(format: "%02x", $0) }.joined()
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try AtomicFile.write(Data((token + "\n").utf8), to: url, mode: 0o600)
        return token
    }

    /// The token in `url`; refuses a file others can read.
    public static func load(_ url: URL) throws -> String {
        let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
        if let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue, mode & 0o077 != 0 {
            throw StasisError(.invalidState, "the token file \(url.path) can be read by others: run `chmod 600 \(url.path)`")
        }
        let token = try String(contentsOf: url, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw StasisError(.corrupted, "the token file \(url.path) is empty") }
        return token
    }
}
