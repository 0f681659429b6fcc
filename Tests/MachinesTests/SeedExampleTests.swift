import Foundation
import Guest
import Images
@testable import Machines
import Snapshots
import StasisCore
import Testing

/// The seed's own example, offline: in a Debian image with git and python3, clone a repository
/// from a host service the guest is allowed to reach, make a virtualenv and install a package from
/// a local wheel, start a dev server on a forwarded port; snapshot; stop; restore: the server
/// answers at once without being restarted, and the clone, the venv and the shell's state are there.
@Suite("Seed example", .timeLimit(.minutes(10)))
struct SeedExampleTests {
    /// A git repository (served the "dumb" HTTP way) and a wheel, on a loopback HTTP server.
    static func hostContent(in dir: URL) async throws -> UInt16 {
        let script = """
        set -e
        cd '\(dir.path)'
        git init -q app
        echo '<h1>seed app</h1>' > app/index.html
        git -C app add index.html
        git -C app -c user.email=t@example.invalid -c user.name=test commit -qm init
        git clone -q --bare app app.git
        git -C app.git update-server-info
        python3 - <<'PY'
        import zipfile, base64, hashlib
        files = {"demo_pkg/__init__.py": "GREETING = 'hello from a local wheel'\\n",
                 "demo_pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: demo-pkg\\nVersion: 1.0\\n",
                 "demo_pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: stasis-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
        record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b'=').decode()},{len(c)}" for p, c in files.items()]
        files["demo_pkg-1.0.dist-info/RECORD"] = "\\n".join(record + ["demo_pkg-1.0.dist-info/RECORD,,"]) + "\\n"
        with zipfile.ZipFile("demo_pkg-1.0-py3-none-any.whl", "w") as z:
            for p, c in files.items(): z.writestr(p, c)
        PY
        """
        try await HostTool.run("bash", ["-c", script])
        return try VMFixture.startFileServer(dir)
    }

    @Test func cloneVenvServerSnapshotStopRestore() async throws {
        let env = try await VMFixture.shared.env()
        try VMFixture.linkRealImage("debian-dev", into: env.home)
        let content = env.home.root.appendingPathComponent("seed-content")
        try FileManager.default.createDirectory(at: content, withIntermediateDirectories: true)
        let servicePort = try await Self.hostContent(in: content)
        let firstPort = try VMFixture.freePort()
        let spec = MachineSpec(image: "debian-dev", memoryMiB: 512, ports: [PortForward(hostPort: firstPort, guestPort: 8000)],
                               allowedHosts: [HostService(hostAddress: "127.0.0.1", port: servicePort, guestAddress: "10.0.2.100")])
        let machine = try await VMFixture.boot(env, name: "seed", spec: spec)
        let base = "http://10.0.2.100:\(servicePort)"
        let setup = try await machine.withAgent { agent in
            try await sh(agent, """
            set -e
            git clone -q \(base)/app.git /root/app
            python3 -m venv --without-pip /root/venv
            python3 -m pip --python /root/venv/bin/python install -q --no-index --disable-pip-version-check --no-compile \(base)/demo_pkg-1.0-py3-none-any.whl
            /root/venv/bin/python -c 'import demo_pkg; print(demo_pkg.GREETING)'
            """)
        }
        #expect(setup.code == 0, "\(setup.err)")
        #expect(setup.out == "hello from a local wheel\n")
        try await machine.withAgent { agent in
            _ = try await agent.spawn(ExecRequest(argv: ["python3", "-m", "http.server", "8000"], workingDirectory: "/root/app"))
            // The shell's working state: a shell whose folder and variable exist only in its memory.
            _ = try await agent.spawn(ExecRequest(argv: ["bash", "-c", "cd /root/app; STATE=kept; while sleep 0.2; do echo \"$PWD $STATE\" > /tmp/shell-state; done"]))
            // Python starts slowly under TCG: wait until the server listens.
            let listening = try await sh(agent, "for i in $(seq 600); do ss -ltn | grep -q ':8000 ' && exit 0; sleep 0.1; done; exit 1")
            #expect(listening.code == 0, "the dev server did not start listening")
        }
        #expect(try await Self.get(firstPort).contains("seed app"))

        let snapshotter = Snapshotter(home: env.home, machines: env.store)
        let snapshot = try await snapshotter.take(machine, tag: "seed", leaveRunning: false)
        #expect(await machine.state == .stopped)

        let secondPort = try VMFixture.freePort()
        let restored = try await snapshotter.restore(snapshot.id, name: "seed-restored", ports: [PortForward(hostPort: secondPort, guestPort: 8000)])
        if let pid = await restored.record.pid { VMFixture.killAtExit(pid) }
        // At once: one request, no retries, no restart of the server.
        let page = try await HostTool.run("curl", ["-s", "-m", "10", "http://127.0.0.1:\(secondPort)/"]).standardOutput
        #expect(page.contains("seed app"))
        let after = try await restored.withAgent { agent in
            try await sh(agent, "ls /root/app; /root/venv/bin/python -c 'import demo_pkg; print(demo_pkg.GREETING)'; sleep 0.3; cat /tmp/shell-state; pgrep -c -f '^python3 -m http.server 8000'")
        }
        #expect(after.out == "index.html\nhello from a local wheel\n/root/app kept\n1\n", "\(after)")
        // New connections work both ways after the restore: the guest reaches its allowed host
        // service again (host to guest was the request above).
        let again = try await restored.withAgent { agent in try await sh(agent, "git clone -q \(base)/app.git /root/again && ls /root/again") }
        #expect(again.out == "index.html\n", "\(again)")
        try await restored.remove(force: true)
        try await machine.remove(force: false)
    }

    static func get(_ port: UInt16) async throws -> String {
        var body = ""
        for _ in 0 ..< 50 where body.isEmpty {
            body = (try? await HostTool.run("curl", ["-s", "-m", "2", "http://127.0.0.1:\(port)/"]).standardOutput) ?? ""
        }
        return body
    }
}
