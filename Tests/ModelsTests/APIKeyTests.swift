import Foundation
import StasisCore
import Testing

@testable import Models

@Suite("API keys")
struct APIKeyTests {
    static let secret = "sk-test-never-print-me-42"

    /// A fresh folder for one test, removed after it.
    func withTemporaryFolder(_ body: (URL) throws -> Void) throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stasis-apikey-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try body(folder)
    }

    func writeKeyFile(in folder: URL, mode: Int) throws -> String {
        let path = folder.appendingPathComponent("key").path
        try Data((Self.secret + "\n").utf8).write(to: URL(fileURLWithPath: path))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    @Test func printsAsRedacted() {
        let key = APIKey(Self.secret)
        #expect("\(key)" == "<redacted>")
        #expect(String(reflecting: key) == "<redacted>")
        var dumped = ""
        dump(key, to: &dumped)
        #expect(!dumped.contains(Self.secret))
        #expect(!"\([key])".contains(Self.secret))
    }

    @Test(arguments: [0o600, 0o400])
    func aFileOnlyItsOwnerCanReadIsAccepted(mode: Int) throws {
        try withTemporaryFolder { folder in
            let key = try APIKey.fromFile(writeKeyFile(in: folder, mode: mode))
            #expect(key.secret == Self.secret)
        }
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o700])
    func aFileOthersCanReadIsRefused(mode: Int) throws {
        try withTemporaryFolder { folder in
            let path = try writeKeyFile(in: folder, mode: mode)
            let error = try #require(throws: StasisError.self) { try APIKey.fromFile(path) }
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("chmod 600 \(path)"))
            #expect(error.message.contains("0" + String(mode, radix: 8)))
            #expect(!"\(error)".contains(Self.secret))
        }
    }

    @Test func aMissingFileIsNotFound() throws {
        let error = try #require(throws: StasisError.self) { try APIKey.fromFile("/nonexistent/stasis/key") }
        #expect(error.code == .notFound)
        #expect(error.message.contains("/nonexistent/stasis/key"))
    }

    @Test func anEmptyFileIsRefused() throws {
        try withTemporaryFolder { folder in
            let path = folder.appendingPathComponent("empty").path
            try Data("\n".utf8).write(to: URL(fileURLWithPath: path))
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
            let error = try #require(throws: StasisError.self) { try APIKey.fromFile(path) }
            #expect(error.message.contains("empty"))
        }
    }

    @Test func anUnsetVariableIsNamedInTheError() throws {
        let name = "STASIS_TEST_UNSET_KEY_\(UUID().uuidString.prefix(8))"
        let error = try #require(throws: StasisError.self) { try APIKey.fromEnvironment(name) }
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains(name))
    }

    @Test func aVariableIsRead() throws {
        // A name no other test uses, so setting it does not race with them.
        let name = "STASIS_TEST_SET_KEY_\(UUID().uuidString.prefix(8))"
        setenv(name, " \(Self.secret)\n", 1)
        defer { unsetenv(name) }
        #expect(try APIKey.fromEnvironment(name).secret == Self.secret)
    }

    @Test func anEmptyVariableIsRefused() throws {
        let name = "STASIS_TEST_EMPTY_KEY_\(UUID().uuidString.prefix(8))"
        setenv(name, "", 1)
        defer { unsetenv(name) }
        let error = try #require(throws: StasisError.self) { try APIKey.fromEnvironment(name) }
        #expect(error.message.contains(name))
    }

    @Test func redactRemovesEveryOccurrence() {
        let key = APIKey(Self.secret)
        #expect(key.redact("a \(Self.secret) b \(Self.secret)") == "a <redacted> b <redacted>")
    }
}
