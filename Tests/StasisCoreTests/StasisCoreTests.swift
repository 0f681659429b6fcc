import Foundation
import StasisCore
import Testing

/// StasisCore: atomic files, STASIS_HOME, host tools.
enum CoreTests {}

/// A fresh folder under /tmp, removed by the caller.
func makeTemporaryFolder() throws -> URL {
    let url = URL(fileURLWithPath: "/tmp/stasis-core-test-\(UInt32.random(in: 0 ... .max))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

func listing(_ folder: URL) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
}

struct Sample: Codable, Equatable {
    var zebra: String
    var apple: Int
    var when: Date
    var tags: [String]
    var nested: [String: Double]?
}

extension CoreTests {
    @Suite struct AtomicFileTests {
        @Test(arguments: [0, 1, 4096, 1 << 20 + 3])
        func writeRoundTrips(size: Int) throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let url = dir.appendingPathComponent("file.bin")
            let data = Data((0 ..< size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
            try AtomicFile.write(data, to: url)
            #expect(try Data(contentsOf: url) == data)
            #expect(try listing(dir) == ["file.bin"])
        }

        @Test func writeOverwritesWholly() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let url = dir.appendingPathComponent("state")
            try AtomicFile.write(Data(repeating: 0x41, count: 10_000), to: url)
            try AtomicFile.write(Data("short".utf8), to: url)
            #expect(try Data(contentsOf: url) == Data("short".utf8), "no tail of the longer old contents")
            for i in 0 ..< 20 { try AtomicFile.write(Data("v\(i)".utf8), to: url) }
            #expect(try String(contentsOf: url, encoding: .utf8) == "v19")
            #expect(try listing(dir) == ["state"], "temporary files left behind")
        }

        @Test func writeAppliesTheMode() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let url = dir.appendingPathComponent("secret")
            try AtomicFile.write(Data("x".utf8), to: url, mode: 0o600)
            let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        }

        @Test func writeIntoAMissingFolderFailsCleanly() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let url = dir.appendingPathComponent("missing/file")
            let error = #expect(throws: StasisError.self) { try AtomicFile.write(Data("x".utf8), to: url) }
            #expect(error?.code == .ioFailure)
            #expect(try listing(dir) == [])
        }

        @Test func writeOverAFolderFailsAndLeavesNoTemporaryFile() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let target = dir.appendingPathComponent("occupied")
            try FileManager.default.createDirectory(at: target.appendingPathComponent("child"), withIntermediateDirectories: true)
            let error = #expect(throws: StasisError.self) { try AtomicFile.write(Data("x".utf8), to: target) }
            #expect(error?.code == .ioFailure)
            #expect(try listing(dir) == ["occupied"])
        }

        @Test func jsonRoundTripsSortedAndPretty() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let url = dir.appendingPathComponent("sample.json")
            // ISO 8601 keeps whole seconds.
            let value = Sample(zebra: "zébra ☃", apple: -3, when: Date(timeIntervalSince1970: 1_700_000_000),
                               tags: ["a", ""], nested: ["pi": 3.25])
            try AtomicFile.writeJSON(value, to: url)
            #expect(try AtomicFile.readJSON(Sample.self, from: url) == value)
            let text = try String(contentsOf: url, encoding: .utf8)
            let apple = try #require(text.range(of: "\"apple\""))
            let zebra = try #require(text.range(of: "\"zebra\""))
            #expect(apple.lowerBound < zebra.lowerBound, "keys sorted")
            #expect(text.contains("\n"), "pretty printed")
            #expect(text.contains("2023-11-14T22:13:20Z"), "dates as ISO 8601")

            let changed = Sample(zebra: "z", apple: 1, when: Date(timeIntervalSince1970: 0), tags: [], nested: nil)
            try AtomicFile.writeJSON(changed, to: url)
            #expect(try AtomicFile.readJSON(Sample.self, from: url) == changed)
            #expect(try listing(dir) == ["sample.json"])
        }

        @Test func readJSONOfAMissingFileIsNotFound() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let error = #expect(throws: StasisError.self) {
                try AtomicFile.readJSON(Sample.self, from: dir.appendingPathComponent("nope.json"))
            }
            #expect(error?.code == .notFound)
            #expect(error?.message.contains("nope.json") == true)
        }

        @Test(arguments: ["", "garbage", "{\"zebra\": ", "{\"zebra\": \"z\"}", "[1, 2, 3]", "\u{FF}\u{FE}"])
        func readJSONOfGarbageIsCorrupted(contents: String) throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let url = dir.appendingPathComponent("bad.json")
            try Data(contents.utf8).write(to: url)
            let error = #expect(throws: StasisError.self) { try AtomicFile.readJSON(Sample.self, from: url) }
            #expect(error?.code == .corrupted)
            #expect(error?.message.contains("bad.json") == true)
        }

        @Test func renameReplacesAFolder() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let source = dir.appendingPathComponent("new")
            try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
            try Data("inside".utf8).write(to: source.appendingPathComponent("f"))
            let target = dir.appendingPathComponent("live")
            try AtomicFile.rename(source, over: target)
            #expect(try listing(dir) == ["live"])
            #expect(try String(contentsOf: target.appendingPathComponent("f"), encoding: .utf8) == "inside")
        }

        @Test func syncOfAMissingPathIsAnIOFailure() throws {
            let missing = URL(fileURLWithPath: "/tmp/stasis-core-test-missing-\(UInt32.random(in: 0 ... .max))")
            #expect(throws: StasisError.self) { try AtomicFile.syncDirectory(missing) }
            #expect(throws: StasisError.self) { try AtomicFile.syncFile(missing) }
        }
    }
}

extension CoreTests {
    @Suite struct StasisHomeTests {
        @Test func stasisHomeVariableWins() {
            let home = StasisHome.fromEnvironment(["STASIS_HOME": "/srv/stasis", "HOME": "/root"])
            #expect(home.root.path == "/srv/stasis")
            #expect(home.machines.path == "/srv/stasis/machines")
            #expect(home.images.path == "/srv/stasis/images")
            #expect(home.guestAgent.path == "/srv/stasis/guest/stasis-init")
            #expect(home.currentKernel.path == "/srv/stasis/kernel/current")
        }

        @Test func pathIsStandardized() {
            let home = StasisHome.fromEnvironment(["STASIS_HOME": "/srv/a/../stasis/./x"])
            #expect(home.root.path == "/srv/stasis/x")
        }

        @Test(arguments: [[:], ["STASIS_HOME": ""], ["OTHER": "/x"]] as [[String: String]])
        func withoutTheVariableItIsDotStasisInHome(environment: [String: String]) {
            let home = StasisHome.fromEnvironment(environment)
            let expected = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".stasis").standardizedFileURL
            #expect(home.root.path == expected.path)
            #expect(home.root.lastPathComponent == ".stasis")
        }

        @Test func prepareCreatesTheLayout() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let home = StasisHome.fromEnvironment(["STASIS_HOME": dir.appendingPathComponent("home").path])
            try home.prepare()
            try home.prepare() // idempotent
            #expect(try listing(home.root) == ["images", "initramfs", "kernel", "machines", "snapshots", "tmp"])
        }
    }
}

extension CoreTests {
    @Suite struct HostToolTests {
        @Test func successReturnsOutput() async throws {
            let out = try await HostTool.run("echo", ["hello", "wörld"])
            #expect(out.standardOutput == "hello wörld\n")
            #expect(out.standardError == "")
        }

        @Test func environmentAndWorkingDirectoryArePassed() async throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let out = try await HostTool.run("sh", ["-c", "echo \"$STASIS_TEST_VAR\"; pwd; echo err >&2"],
                                             environment: ["STASIS_TEST_VAR": "value 1"], workingDirectory: dir)
            #expect(out.standardOutput == "value 1\n\(dir.path)\n")
            #expect(out.standardError == "err\n")
        }

        @Test func absolutePathWorks() async throws {
            let sh = try #require(HostTool.which("sh"))
            let out = try await HostTool.run(sh, ["-c", "echo ok"])
            #expect(out.standardOutput == "ok\n")
        }

        @Test func falseIsAToolFailure() async throws {
            let error = await #expect(throws: StasisError.self) { try await HostTool.run("false", []) }
            #expect(error?.code == .toolFailed)
            #expect(error?.message.contains("false") == true)
        }

        @Test func failureMessageCarriesTheStderrTail() async throws {
            let error = await #expect(throws: StasisError.self) {
                try await HostTool.run("sh", ["-c", "echo out; echo oops >&2; exit 3"])
            }
            #expect(error?.code == .toolFailed)
            let message = error?.message ?? ""
            #expect(message.contains("oops"), "\(message)")
            #expect(message.contains("sh"), "\(message)")
            #expect(message.contains("3"), "\(message)")
            #expect(!message.contains("out\n"), "stdout is not stderr: \(message)")
        }

        @Test func onlyTheLastLinesOfStderrAreKept() async throws {
            let error = await #expect(throws: StasisError.self) {
                try await HostTool.run("sh", ["-c", "for i in $(seq 1 30); do echo line$i >&2; done; exit 1"])
            }
            let message = error?.message ?? ""
            #expect(message.contains("line30"), "\(message)")
            #expect(message.contains("line23"), "\(message)")
            #expect(!message.contains("line22"), "\(message)")
            #expect(!message.contains("line9\n"), "\(message)")
        }

        @Test(arguments: ["stasis-no-such-program-4711", "/nonexistent/stasis-no-such-program"])
        func missingProgramIsAMissingDependency(program: String) async throws {
            let error = await #expect(throws: StasisError.self) { try await HostTool.run(program, ["x"]) }
            #expect(error?.code == .missingDependency)
            #expect(error?.message.contains(program) == true)
        }

        @Test func outputOverTheLimitIsNotCalledAMissingProgram() async throws {
            let error = await #expect(throws: StasisError.self) {
                try await HostTool.run("sh", ["-c", "head -c 100000 /dev/zero"], outputLimit: 1000)
            }
            #expect(error?.code != .missingDependency, "\(String(describing: error))")
        }

        @Test func whichFindsProgramsInPath() throws {
            let sh = try #require(HostTool.which("sh"))
            #expect(sh.hasSuffix("/sh"))
            #expect(access(sh, X_OK) == 0)
            #expect(HostTool.which("stasis-no-such-program-4711") == nil)
        }

        @Test func whichHonoursTheGivenPathAndTheExecutableBit() throws {
            let dir = try makeTemporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let tool = dir.appendingPathComponent("stasis-fake-tool")
            try Data("#!/bin/sh\n".utf8).write(to: tool)
            #expect(HostTool.which("stasis-fake-tool", path: "/nonexistent:\(dir.path)") == nil, "not executable yet")
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: tool.path)
            #expect(HostTool.which("stasis-fake-tool", path: "/nonexistent:\(dir.path)") == tool.path)
            #expect(HostTool.which("stasis-fake-tool", path: "/usr/bin") == nil)
            #expect(HostTool.which("stasis-fake-tool") == nil, "not in the real PATH")
        }
    }

    @Suite struct OpenFileLimitTests {
        /// A soft limit below the hard one is raised to it (restores hold one descriptor per pack).
        @Test func theSoftLimitIsRaisedToTheHardLimit() throws {
            let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
            var limit = rlimit()
            try #require(getrlimit(resource, &limit) == 0)
            let hard = limit.rlim_max
            if hard > 256 {
                var lowered = limit
                lowered.rlim_cur = 256
                try #require(setrlimit(resource, &lowered) == 0)
            }
            #expect(OpenFileLimit.raiseToHardLimit() == UInt64(hard))
            try #require(getrlimit(resource, &limit) == 0)
            #expect(limit.rlim_cur == hard)
        }
    }
}
