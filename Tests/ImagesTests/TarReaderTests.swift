import Foundation
import StasisCore
import Testing

@testable import Images

/// Every entry of an archive with its data, read through `TarReader`.
private func readAll(_ handle: FileHandle, label: String = "test.tar", chunkSize: Int = 1 << 20) throws -> [(TarEntry, [UInt8])] {
    let reader = TarReader(fileHandle: handle, label: label, chunkSize: chunkSize)
    var out: [(TarEntry, [UInt8])] = []
    while let entry = try reader.next() {
        out.append((entry, try reader.readAllContents()))
    }
    return out
}

private func trimmed(_ path: String) -> String {
    path.hasSuffix("/") ? String(path.dropLast()) : path
}

@Suite struct TarReaderTests {
    @Test(arguments: ["ustar", "pax", "gnu"])
    func readsHeaders(format: String) async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        try await f.make("formats", f.dir.path)
        let handle = try FileHandle(forReadingFrom: f.url("\(format).tar"))
        defer { try? handle.close() }
        let entries = try readAll(handle)
        let byPath = Dictionary(entries.map { (trimmed($0.0.path), $0) }, uniquingKeysWith: { a, _ in a })

        let short = try #require(byPath["short.txt"])
        #expect(short.0.kind == .regular)
        #expect(short.0.mode == 0o640)
        #expect(short.0.uid == 1234 && short.0.gid == 99)
        #expect(short.0.mtime == 1_700_000_000)
        #expect(short.0.size == 6)
        #expect(short.1 == Array("hello\n".utf8))
        #expect(byPath["dir"]?.0.kind == .directory)
        #expect(byPath["dir/sl"]?.0.kind == .symlink)
        #expect(byPath["dir/sl"]?.0.linkTarget == "../short.txt")

        if format != "ustar" {
            // pax `path`/`linkpath` records, or GNU 'L'/'K' long names.
            let longName = "dir/" + String(repeating: "n", count: 150) + "/file-with-a-long-name.txt"
            #expect(byPath[longName]?.1 == Array("long\n".utf8))
            #expect(byPath["dir/longlink"]?.0.linkTarget == "/" + String(repeating: "t", count: 120))
            #expect(entries.count == 5)
        } else {
            #expect(entries.count == 3)
        }
    }

    @Test func streamsInSmallChunksFromAPipe() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let archive = f.url("big.tar")
        try await f.make("big", archive.path)
        let expected = try [UInt8](Data(contentsOf: f.url("big.tar.data")))

        // A pipe cannot seek: skipping and reading must both work by reading forward.
        let cat = Process()
        cat.executableURL = URL(fileURLWithPath: HostTool.which("cat") ?? "/bin/cat")
        cat.arguments = [archive.path]
        let pipe = Pipe()
        cat.standardOutput = pipe
        try cat.run()
        try pipe.fileHandleForWriting.close()
        let reader = TarReader(fileHandle: pipe.fileHandleForReading, label: "pipe", chunkSize: 4096)
        let big = try #require(try reader.next())
        #expect(big.path == "big.bin" && big.size == Int64(expected.count))
        var received: [UInt8] = []
        var chunks = 0
        try reader.readContents { chunk in
            #expect(chunk.count <= 4096)
            received.append(contentsOf: chunk)
            chunks += 1
        }
        #expect(received == expected)
        #expect(chunks > expected.count / 4096)
        let after = try #require(try reader.next())
        #expect(after.path == "after.txt")
        #expect(try reader.readAllContents() == Array("after\n".utf8))
        #expect(try reader.next() == nil)
        try pipe.fileHandleForReading.close()
        cat.waitUntilExit()
    }

    @Test func skipsUnreadDataBySeeking() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let archive = f.url("big.tar")
        try await f.make("big", archive.path)
        let handle = try FileHandle(forReadingFrom: archive)
        defer { try? handle.close() }
        let reader = TarReader(fileHandle: handle, label: "big.tar", chunkSize: 8192)
        #expect(try reader.next()?.path == "big.bin")
        #expect(try reader.next()?.path == "after.txt")
        #expect(try reader.readAllContents() == Array("after\n".utf8))
        #expect(try reader.next() == nil)
    }

    @Test func refusesDamagedArchives() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        try await f.make("formats", f.dir.path)
        var bytes = try [UInt8](Data(contentsOf: f.url("ustar.tar")))
        bytes[3] ^= 0x20
        try Data(bytes).write(to: f.url("bad-checksum.tar"))
        let handle = try FileHandle(forReadingFrom: f.url("bad-checksum.tar"))
        defer { try? handle.close() }
        let error = #expect(throws: StasisError.self) { try readAll(handle) }
        #expect(error?.code == .corrupted)
        #expect(error?.message.contains("bad checksum") == true)

        try await f.make("big", f.url("big.tar").path)
        let truncated = try FileHandle(forUpdating: f.url("big.tar"))
        try truncated.truncate(atOffset: 1_000_000)
        try truncated.seek(toOffset: 0)
        defer { try? truncated.close() }
        let cut = #expect(throws: StasisError.self) { try readAll(truncated) }
        #expect(cut?.code == .corrupted)
        #expect(cut?.message.contains("truncated") == true)
    }
}

@Suite(.enabled(if: geteuid() == 0, "extraction sets owners and makes device nodes: run as root"))
struct RootfsExtractorTests {
    @Test func extractsEveryKindOfEntry() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let canary = f.url("canary")
        try FileManager.default.createDirectory(at: canary, withIntermediateDirectories: true)
        let archive = f.url("special.tar")
        try await f.make("special", archive.path, canary.path)
        let root = f.url("root")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let handle = try FileHandle(forReadingFrom: archive)
        defer { try? handle.close() }
        try RootfsExtractor(root: root).extract(TarReader(fileHandle: handle, label: "special.tar"), label: "special.tar", whiteouts: false)

        func lstatOf(_ path: String) throws -> stat {
            var st = stat()
            try #require(lstat(root.appendingPathComponent(path).path, &st) == 0, "\(path) is missing")
            return st
        }
        let file = try lstatOf("etc/file")
        #expect(file.st_mode & S_IFMT == S_IFREG)
        #expect(file.st_mode & 0o7777 == 0o4750, "setuid survives because chmod follows chown")
        #expect(file.st_uid == 1000 && file.st_gid == 1001)
        #expect(file.st_mtim.tv_sec == 1_700_000_000)
        #expect(try String(contentsOf: root.appendingPathComponent("etc/file"), encoding: .utf8) == "content\n")
        let hard = try lstatOf("etc/hard")
        #expect(hard.st_ino == file.st_ino && hard.st_nlink == 2)
        let sym = try lstatOf("etc/sym")
        #expect(sym.st_mode & S_IFMT == S_IFLNK && sym.st_uid == 1000)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root.appendingPathComponent("etc/sym").path) == "file")
        let null = try lstatOf("dev/null")
        #expect(null.st_mode & S_IFMT == S_IFCHR && null.st_mode & 0o7777 == 0o666)
        #expect(null.st_rdev == RootfsExtractor.makeDevice(1, 3))
        let sda = try lstatOf("dev/sda")
        #expect(sda.st_mode & S_IFMT == S_IFBLK && sda.st_gid == 6 && sda.st_rdev == RootfsExtractor.makeDevice(8, 0))
        let fifo = try lstatOf("dev/fifo")
        #expect(fifo.st_mode & S_IFMT == S_IFIFO && fifo.st_mode & 0o7777 == 0o620)
        // Folder metadata lands after the folder's children, so the mtime is the archive's.
        let priv = try lstatOf("private")
        #expect(priv.st_mode & 0o7777 == 0o700 && priv.st_uid == 1000 && priv.st_mtim.tv_sec == 1_700_000_000)
        let trap = try lstatOf("trap")
        #expect(trap.st_mode & S_IFMT == S_IFREG)
        #expect(try FileManager.default.contentsOfDirectory(atPath: canary.path).isEmpty, "a symlink was written through")
    }

    @Test func layersApplyWhiteoutsOnlyToLowerLayers() async throws {
        let f = try ImageFixture()
        defer { f.cleanup() }
        let archive = f.url("saved.tar")
        try await f.make("docker", archive.path, "legacy")
        let unpacked = f.url("unpacked")
        try FileManager.default.createDirectory(at: unpacked, withIntermediateDirectories: true)
        let root = f.url("root")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try ImageStore.withArchive(archive, label: "saved.tar") { reader in
            try RootfsExtractor(root: unpacked).extract(reader, label: "saved.tar", whiteouts: false)
        }
        let extractor = try RootfsExtractor(root: root)
        for layer in ["0000000000000000000000000000000000000000000000000000000000000001", "0000000000000000000000000000000000000000000000000000000000000002"] {
            try ImageStore.withArchive(unpacked.appendingPathComponent("\(layer)/layer.tar"), label: layer) { reader in
                try extractor.extract(reader, label: layer, whiteouts: true)
            }
        }
        var paths: Set<String> = []
        let enumerator = FileManager.default.enumerator(atPath: root.path)
        while let path = enumerator?.nextObject() as? String { paths.insert(path) }
        #expect(paths == layeredTree)
    }
}
