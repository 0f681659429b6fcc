import Foundation
import Guest
import Images
@testable import Machines
import StasisCore
import Synchronization
import Testing

/// A temporary STASIS_HOME with the real kernel and guest agent linked in, a tiny busybox image,
/// a host service for the allow-host tests, and one shared machine booted once for every test
/// that can share it. Everything it starts is killed when the test process exits.
actor VMFixture {
    static let shared = VMFixture()

    struct Environment: Sendable {
        let home: StasisHome
        let store: MachineStore
        let boot: BootArtifacts
        /// A host HTTP service on loopback that answers "allowed-service".
        let hostServicePort: UInt16
        /// The host port forwarded to the shared machine's port 8080.
        let forwardedPort: UInt16
    }

    private var environment: Task<Environment, any Error>?
    private var sharedMachine: Task<Machine, any Error>?

    /// Processes to kill when the tests end (QEMU outlives us by design, so we must).
    static let cleanup = Mutex<[Int32]>([])

    static func killAtExit(_ pid: Int32) {
        cleanup.withLock { $0.append(pid) }
        registerAtExit
    }

    private static let registerAtExit: Void = {
        atexit {
            for pid in VMFixture.cleanup.withLock({ $0 }) { kill(pid, SIGKILL) }
        }
    }()

    func env() async throws -> Environment {
        if environment == nil { environment = Task { try await Self.makeEnvironment() } }
        guard let environment else { throw StasisError(.internalError, "no environment") }
        return try await environment.value
    }

    /// The machine most tests use: isolated network, -p forwardedPort:8080, allowed host service.
    func machine() async throws -> Machine {
        let env = try await env()
        if sharedMachine == nil {
            sharedMachine = Task {
                let spec = MachineSpec(
                    image: "bb", memoryMiB: 256,
                    ports: [PortForward(hostPort: env.forwardedPort, guestPort: 8080)],
                    allowedHosts: [HostService(hostAddress: "127.0.0.1", port: env.hostServicePort, guestAddress: "10.0.2.100")])
                return try await Self.boot(env, name: "shared", spec: spec)
            }
        }
        guard let sharedMachine else { throw StasisError(.internalError, "no machine") }
        return try await sharedMachine.value
    }

    /// Another temporary home sharing the fixture's kernel, guest agent and busybox image, for a
    /// process (`stasis serve`) that must own its home alone.
    func secondaryHome() async throws -> StasisHome {
        let env = try await env()
        let home = StasisHome(root: URL(fileURLWithPath: "/tmp/stasis-test-\(UInt32.random(in: 0 ... .max))"))
        try home.prepare()
        let fm = FileManager.default
        try fm.removeItem(at: home.kernels)
        try fm.createSymbolicLink(at: home.kernels, withDestinationURL: env.home.kernels.resolvingSymlinksInPath())
        try fm.createDirectory(at: home.guestAgent.deletingLastPathComponent(), withIntermediateDirectories: true)
        try fm.createSymbolicLink(at: home.guestAgent, withDestinationURL: env.home.guestAgent.resolvingSymlinksInPath())
        try fm.createSymbolicLink(at: home.images.appendingPathComponent("bb"), withDestinationURL: env.home.images.appendingPathComponent("bb"))
        return home
    }

    /// Boots a new machine in the fixture's home.
    static func boot(_ env: Environment, name: String, spec: MachineSpec) async throws -> Machine {
        let record = try env.store.create(name: name, spec: spec, autoRemove: false)
        let machine = Machine(record: record, store: env.store)
        do {
            let boot = spec.image == "bb" ? env.boot : try await BootArtifacts.resolve(home: env.home, image: spec.image)
            _ = try await machine.boot(boot, timeout: .seconds(120))
        } catch {
            if let pid = await machine.record.pid { killAtExit(pid) }
            throw error
        }
        if let pid = await machine.record.pid { killAtExit(pid) }
        return machine
    }

    private static func makeEnvironment() async throws -> Environment {
        let real = StasisHome.fromEnvironment()
        let root = URL(fileURLWithPath: "/tmp/stasis-test-\(UInt32.random(in: 0 ... .max))")
        let home = StasisHome(root: root)
        try home.prepare()
        // The kernel and guest agent that setup installed, shared read-only.
        try FileManager.default.removeItem(at: home.kernels)
        try FileManager.default.createSymbolicLink(at: home.kernels, withDestinationURL: real.kernels)
        let agent = try BootArtifacts.agentBinary(home: real)
        try FileManager.default.createDirectory(at: home.guestAgent.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: home.guestAgent, withDestinationURL: agent)

        let rootfs = root.appendingPathComponent("bbroot")
        try makeBusyboxRoot(at: rootfs)
        _ = try await ImageStore(home: home).importRootfs(name: "bb", from: rootfs) { _ in }
        try? FileManager.default.removeItem(at: rootfs)

        let boot = try await BootArtifacts.resolve(home: home, image: "bb")
        let port = try startHostService()
        return Environment(home: home, store: MachineStore(home: home), boot: boot,
                           hostServicePort: port, forwardedPort: try freePort())
    }

    /// A root filesystem with static busybox as every tool, and two users.
    static func makeBusyboxRoot(at root: URL) throws {
        let fm = FileManager.default
        for dir in ["bin", "etc", "root", "tmp", "www", "home/nobody"] {
            try fm.createDirectory(at: root.appendingPathComponent(dir), withIntermediateDirectories: true)
        }
        try fm.copyItem(atPath: "/bin/busybox", toPath: root.appendingPathComponent("bin/busybox").path)
        let applets = ["sh", "ls", "cat", "echo", "sleep", "head", "wc", "sha256sum", "seq", "true", "false", "id",
                       "hostname", "date", "uname", "ip", "nc", "printf", "kill", "ps", "env", "pwd", "mkdir", "rm",
                       "dd", "sync", "yes", "httpd", "tee", "tr", "grep", "test", "touch", "stat"]
        for applet in applets {
            try fm.createSymbolicLink(atPath: root.appendingPathComponent("bin/\(applet)").path, withDestinationPath: "busybox")
        }
        try "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/sh\n"
            .write(to: root.appendingPathComponent("etc/passwd"), atomically: true, encoding: .utf8)
        try "guest-page\n".write(to: root.appendingPathComponent("www/index.html"), atomically: true, encoding: .utf8)
    }

    /// An image setup built in the real STASIS_HOME (too slow to build per test run), linked in.
    static func linkRealImage(_ name: String, into home: StasisHome) throws {
        let source = StasisHome.fromEnvironment().images.appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: source.appendingPathComponent("image.json").path) else {
            throw StasisError(.missingDependency, "this test needs the image '\(name)' in \(source.deletingLastPathComponent().path): run scripts/setup.sh")
        }
        let link = home.images.appendingPathComponent(name)
        if !FileManager.default.fileExists(atPath: link.path) {
            try FileManager.default.createSymbolicLink(at: link, withDestinationURL: source)
        }
    }

    /// Serves a folder over HTTP on a free loopback port; returns the port.
    static func startFileServer(_ folder: URL) throws -> UInt16 {
        try startPython("""
        import http.server, functools
        H = functools.partial(http.server.SimpleHTTPRequestHandler, directory="\(folder.path)")
        H.log_message = lambda *a: None
        s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        print(s.server_address[1], flush=True)
        s.serve_forever()
        """)
    }

    /// Starts a tiny HTTP server on a free loopback port; returns the port.
    private static func startHostService() throws -> UInt16 {
        try startPython("""
        import http.server, sys
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(b"allowed-service")
            def log_message(self, *a): pass
        s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        print(s.server_address[1], flush=True)
        s.serve_forever()
        """)
    }

    /// Runs a Python server script that prints its port first; returns the port.
    private static func startPython(_ script: String) throws -> UInt16 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        killAtExit(process.processIdentifier)
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let port = UInt16(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw StasisError(.internalError, "the test host service did not report its port")
        }
        return port
    }

    /// A loopback TCP port nobody listens on right now.
    static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
            }
        }
        guard ok else { throw StasisError(.internalError, "cannot find a free port") }
        return UInt16(bigEndian: addr.sin_port)
    }
}

/// Runs a shell command in the guest and returns (exit code, stdout, stderr) as text.
func sh(_ agent: AgentClient, _ script: String) async throws -> (code: Int32, out: String, err: String) {
    let r = try await agent.run(ExecRequest(argv: ["sh", "-c", script]))
    return (r.status.shellCode, String(decoding: r.stdout, as: UTF8.self), String(decoding: r.stderr, as: UTF8.self))
}
