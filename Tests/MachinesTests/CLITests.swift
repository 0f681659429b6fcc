import Foundation
import Images
@testable import Machines
import StasisCore
import Testing

/// The `stasis` command as a user runs it: a real process, its exit code and its output.
struct CLI {
    let home: StasisHome
    var path: String? = nil

    struct Result {
        let code: Int32
        let stdout: String
        let stderr: String
    }

    /// The `stasis` binary built next to this test bundle.
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("stasis")
    }

    func callAsFunction(_ arguments: String...) throws -> Result { try callAsFunction(arguments) }

    func callAsFunction(_ arguments: [String]) throws -> Result {
        let process = Process()
        process.executableURL = Self.binary
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["STASIS_HOME"] = home.root.path
        if let path { env["PATH"] = path }
        process.environment = env
        // Files, not pipes: a chatty process can never block on a full pipe.
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("stasis-cli-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: base.path + ".out", contents: nil)
        FileManager.default.createFile(atPath: base.path + ".err", contents: nil)
        defer {
            try? FileManager.default.removeItem(atPath: base.path + ".out")
            try? FileManager.default.removeItem(atPath: base.path + ".err")
        }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: base.path + ".out"))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: base.path + ".err"))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return Result(code: process.terminationStatus,
                      stdout: (try? String(contentsOfFile: base.path + ".out", encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOfFile: base.path + ".err", encoding: .utf8)) ?? "")
    }
}

@Suite("stasis CLI", .timeLimit(.minutes(10)))
struct CLITests {
    @Test func helpListsTheCommands() throws {
        let r = try CLI(home: StasisHome(root: URL(fileURLWithPath: "/tmp/stasis-cli-unused")))("--help")
        #expect(r.code == 0)
        for command in ["run", "exec", "ps", "logs", "stop", "rm", "image", "doctor"] {
            #expect(r.stdout.contains("  \(command)"), "help lists \(command)")
        }
    }

    @Test func runPassesTheExitCodeThroughAndRemovesWithRm() async throws {
        let env = try await VMFixture.shared.env()
        let cli = CLI(home: env.home)
        let r = try cli("run", "--rm", "--name", "cli-exit", "--network", "none", "--memory", "256M", "bb", "sh", "-c", "echo out; echo err >&2; exit 42")
        #expect(r.code == 42, "\(r.stderr)")
        #expect(r.stdout == "out\n")
        #expect(r.stderr.contains("err\n"))
        #expect(throws: StasisError.self) { try env.store.find("cli-exit") }
        if let record = try? env.store.find("cli-exit"), let pid = record.pid { kill(pid, SIGKILL) }
    }

    @Test func detachedRunExecPsStopAndRm() async throws {
        let env = try await VMFixture.shared.env()
        let cli = CLI(home: env.home)
        let run = try cli("run", "-d", "--name", "cli-d", "--network", "none", "--memory", "256M", "bb")
        #expect(run.code == 0, "\(run.stderr)")
        #expect(run.stdout == "cli-d\n")
        if let pid = try env.store.find("cli-d").pid { VMFixture.killAtExit(pid) }

        let exec = try cli("exec", "cli-d", "sh", "-c", "exit 3")
        #expect(exec.code == 3)
        let missing = try cli("exec", "cli-d", "no-such-program")
        #expect(missing.code == 127)
        #expect(missing.stderr.contains("no-such-program"))

        let ps = try cli("ps", "--json")
        let listed = try JSONDecoder.iso8601.decode([MachineRecord].self, from: Data(ps.stdout.utf8))
        #expect(listed.contains { $0.name == "cli-d" && $0.state == .running && $0.accelerator != nil })

        let rm = try cli("rm", "cli-d")
        #expect(rm.code == 125)
        #expect(rm.stderr.contains("stop it first"), "\(rm.stderr)")

        #expect(try cli("stop", "cli-d").code == 0)
        let stoppedExec = try cli("exec", "cli-d", "true")
        #expect(stoppedExec.code == 125)
        #expect(stoppedExec.stderr.contains("not running"), "\(stoppedExec.stderr)")
        #expect(try cli("ps", "-a").stdout.contains("stopped"))
        #expect(try cli("rm", "cli-d").code == 0)
        #expect(try cli("ps", "-a", "-q").stdout.contains("cli-d") == false)
    }

    /// Each bad input gets one clear line on stderr, exit code 125, and leaves nothing behind.
    /// In a home of its own: other tests create machines in the shared one all the time.
    @Test func badInputIsRefusedClearly() async throws {
        let home = try await VMFixture.shared.secondaryHome()
        let store = MachineStore(home: home)
        let cli = CLI(home: home)
        _ = try store.create(name: "taken", spec: MachineSpec(image: "bb"), autoRemove: false)
        let cases: [([String], String)] = [
            (["run", "no-such-image"], "stasis images"),
            (["run", "--memory", "lots", "bb"], "512M"),
            (["run", "--memory", "8", "bb"], "out of range"),
            (["run", "-p", "99999:80", "bb"], "HOSTPORT:GUESTPORT"),
            (["run", "--allow-host", "nonsense:port", "bb"], "ADDR:PORT"),
            (["run", "--name", "taken", "bb"], "in use"),
            (["run", "--name", "bad name!", "bb"], "invalid machine name"),
            (["exec", "nobody-here", "true"], "stasis ps -a"),
            (["stop", "nobody-here"], "no machine"),
            (["logs", "nobody-here"], "no machine"),
            (["image", "rm", "nothing"], "stasis images"),
            (["image", "import", "x", "/nonexistent/rootfs.tar"], "does not exist"),
        ]
        let before = try store.list().map(\.id)
        for (args, hint) in cases {
            let r = try cli(args)
            #expect(r.code != 0, "\(args) must fail")
            #expect(r.stderr.contains(hint), "\(args): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count <= 3, "\(args): short message: \(r.stderr)")
        }
        let created = try store.list().filter { !before.contains($0.id) }
        #expect(created.isEmpty, "bad input created machines: \(created.map(\.name))")
        try store.delete(id: try store.find("taken").id)
    }

    @Test func missingKernelOrQEMUSaysWhatToDo() async throws {
        let env = try await VMFixture.shared.env()
        // A home with the image but no kernel.
        let bare = StasisHome(root: URL(fileURLWithPath: "/tmp/stasis-test-bare-\(UInt32.random(in: 0 ... .max))"))
        defer { try? FileManager.default.removeItem(at: bare.root) }
        try bare.prepare()
        try FileManager.default.copyItem(at: env.home.images.appendingPathComponent("bb"), to: bare.images.appendingPathComponent("bb"))
        let noKernel = try CLI(home: bare)("run", "bb", "true")
        #expect(noKernel.code == 125)
        #expect(noKernel.stderr.contains("no guest kernel") && noKernel.stderr.contains("setup.sh"), "\(noKernel.stderr)")

        // A PATH without QEMU.
        let noQEMU = try CLI(home: env.home, path: "/nonexistent")("run", "--network", "none", "bb", "true")
        #expect(noQEMU.code == 125)
        #expect(noQEMU.stderr.contains("qemu-system-x86_64 is not installed"), "\(noQEMU.stderr)")
        #expect(try env.store.list().allSatisfy { $0.state != .failed || $0.name == "other" })
    }

    @Test func doctorReportsTheAcceleratorAndWhy() async throws {
        let env = try await VMFixture.shared.env()
        let r = try CLI(home: env.home)("doctor", "--json")
        struct Check: Decodable { let name: String; let ok: Bool; let detail: String }
        let checks = try JSONDecoder().decode([Check].self, from: Data(r.stdout.utf8))
        let accel = try #require(checks.first { $0.name == "accelerator" })
        let expected = AcceleratorChoice.choose(.auto)
        #expect(accel.detail.hasPrefix(expected.kind.rawValue))
        #expect(accel.detail.contains(expected.reason))
        #expect(checks.contains { $0.name == "kernel" && $0.ok })
    }

    @Test func anEscapingTarballIsRefusedAndLeavesNothing() async throws {
        let env = try await VMFixture.shared.env()
        let dir = env.home.root.appendingPathComponent("evil-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try await HostTool.run("python3", ["-c", """
        import tarfile, io
        with tarfile.open("\(dir.path)/evil.tar", "w") as t:
            i = tarfile.TarInfo("../escape"); data = b"x"; i.size = len(data); t.addfile(i, io.BytesIO(data))
        """])
        let r = try CLI(home: env.home)("image", "import", "evil", dir.appendingPathComponent("evil.tar").path)
        #expect(r.code == 125)
        #expect(r.stderr.contains("../escape") && r.stderr.contains("refused"), "\(r.stderr)")
        #expect(try CLI(home: env.home)("images").stdout.contains("evil") == false)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: env.home.tmp.path).filter { !$0.hasPrefix("rm-") }
        #expect(leftovers.isEmpty, "staging left behind: \(leftovers)")
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}
