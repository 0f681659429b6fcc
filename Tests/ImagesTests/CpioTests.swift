import Foundation
import Images
import StasisCore
import Testing

@Suite struct CpioTests {
    /// An archive exercising every entry kind, including implicit parents and odd-sized files.
    private func sampleArchive(withDevice: Bool = true) throws -> Data {
        var cpio = CpioWriter()
        try cpio.addDirectory("etc")
        try cpio.addFile("/etc/hello", contents: Data("hello\n".utf8))
        try cpio.addFile("bin/run", contents: Data("#!/bin/sh\necho hi\n".utf8), mode: 0o755)
        try cpio.addSymlink("bin/sh", target: "run")
        for size in 0 ..< 6 {
            try cpio.addFile("pad/f\(size)", contents: Data((0 ..< size).map { UInt8($0 + 65) }))
        }
        try cpio.addDirectory("tmp", mode: 0o1777)
        if withDevice { try cpio.addCharacterDevice("dev/console", major: 5, minor: 1) }
        return try cpio.finish()
    }

    @Test func cpioListsEveryEntryInOrder() async throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let archive = dir.appendingPathComponent("a.cpio")
        try sampleArchive().write(to: archive)

        let listing = try await HostTool.run("cpio", ["-t", "--quiet", "-F", archive.path])
        let names = listing.standardOutput.split(separator: "\n").map(String.init)
        #expect(names == [
            "etc", "etc/hello", "bin", "bin/run", "bin/sh",
            "pad", "pad/f0", "pad/f1", "pad/f2", "pad/f3", "pad/f4", "pad/f5",
            "tmp", "dev", "dev/console",
        ])
    }

    @Test func cpioExtractsContentsModesAndLinks() async throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let archive = dir.appendingPathComponent("a.cpio")
        // No device node: creating one needs root, and the listing test covers it.
        try sampleArchive(withDevice: false).write(to: archive)
        let out = dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try await HostTool.run("cpio", ["-i", "-d", "--quiet", "-F", archive.path, "-D", out.path])

        #expect(try String(contentsOf: out.appendingPathComponent("etc/hello"), encoding: .utf8) == "hello\n")
        for size in 0 ..< 6 {
            let data = try Data(contentsOf: out.appendingPathComponent("pad/f\(size)"))
            #expect(data == Data((0 ..< size).map { UInt8($0 + 65) }), "pad/f\(size)")
        }
        let fm = FileManager.default
        #expect(try fm.destinationOfSymbolicLink(atPath: out.appendingPathComponent("bin/sh").path) == "run")
        let runMode = try #require(fm.attributesOfItem(atPath: out.appendingPathComponent("bin/run").path)[.posixPermissions] as? Int)
        #expect(runMode == 0o755)
        let helloMode = try #require(fm.attributesOfItem(atPath: out.appendingPathComponent("etc/hello").path)[.posixPermissions] as? Int)
        #expect(helloMode == 0o644)
        var isDir: ObjCBool = false
        #expect(fm.fileExists(atPath: out.appendingPathComponent("tmp").path, isDirectory: &isDir) && isDir.boolValue)
    }

    @Test func cpioShowsTheConsoleDeviceNode() async throws {
        let dir = try ImagesTestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let archive = dir.appendingPathComponent("a.cpio")
        try sampleArchive().write(to: archive)
        let listing = try await HostTool.run("cpio", ["-tv", "--quiet", "-F", archive.path])
        let line = try #require(listing.standardOutput.split(separator: "\n").first { $0.hasSuffix(" dev/console") })
        #expect(line.hasPrefix("crw-------"), "\(line)")
        #expect(line.contains("5,   1") || line.contains("5, 1"), "\(line)")
        let tmpLine = try #require(listing.standardOutput.split(separator: "\n").first { $0.hasSuffix(" tmp") })
        #expect(tmpLine.hasPrefix("drwxrwxrwt"), "\(tmpLine)")
    }

    @Test func outputIsDeterministicPaddedAndTerminated() throws {
        let first = try sampleArchive()
        let second = try sampleArchive()
        #expect(first == second)
        #expect(first.count % 4 == 0)
        let text = String(decoding: first, as: UTF8.self)
        #expect(text.contains("TRAILER!!!"))
        #expect(text.hasPrefix("070701"))
    }

    @Test func headerBytesMatchTheNewcLayout() throws {
        var cpio = CpioWriter()
        try cpio.addDirectory("a")
        try cpio.addFile("a/b", contents: Data("xyz".utf8), mode: 0o600, uid: 1, gid: 2, mtime: 0x10)
        let data = try cpio.finish()
        let zero = "00000000"
        let dirHeader = "070701" + "00000001" + "000041ED" + zero + zero + "00000002" + zero + zero
            + zero + zero + zero + zero + "00000002" + zero + "a\0"
        // 110 header bytes + "a\0" = 112: already aligned.
        let fileHeader = "070701" + "00000002" + "00008180" + "00000001" + "00000002" + "00000001" + "00000010"
            + "00000003" + zero + zero + zero + zero + "00000004" + zero + "a/b\0" + "\0\0" + "xyz\0"
        let trailer = "070701" + zero + zero + zero + zero + "00000001" + zero + zero
            + zero + zero + zero + zero + "0000000B" + zero + "TRAILER!!!\0" + "\0\0\0"
        #expect(String(decoding: data, as: UTF8.self) == dirHeader + fileHeader + trailer)
    }

    @Test func misuseIsRejected() throws {
        var cpio = CpioWriter()
        try cpio.addFile("x", contents: Data())
        #expect(throws: StasisError.self) { try cpio.addFile("x", contents: Data()) }
        #expect(throws: StasisError.self) { try cpio.addDirectory("../etc") }
        #expect(throws: StasisError.self) { try cpio.addDirectory("/") }
        _ = try cpio.finish()
        #expect(throws: StasisError.self) { try cpio.addDirectory("later") }
    }
}
