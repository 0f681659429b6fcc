import Foundation
import Guest
import Images
@testable import Machines
import StasisCore
import Testing

/// Real microVMs under QEMU (TCG here): they share one booted machine where they can.
@Suite("Machines with real VMs", .timeLimit(.minutes(10)))
struct MachineVMTests {
    @Test func bootsAndRunsACommand() async throws {
        let machine = try await VMFixture.shared.machine()
        #expect(await machine.state == .running)
        let (info, result) = try await machine.withAgent { agent in
            (await agent.guestInfo, try await sh(agent, "echo hello; hostname; uname -r"))
        }
        #expect(result.code == 0)
        let lines = result.out.split(separator: "\n").map(String.init)
        #expect(lines.first == "hello")
        #expect(lines.dropFirst().first == "shared")
        #expect(info?.hostname == "shared")
        #expect(info?.agentVersion == AgentProtocol.version)
        #expect(await machine.record.accelerator != nil)
    }

    /// Machines boot with deferred writeback unless told not to (`MachineSpec.deferWriteback`):
    /// the agent sets the expiry to an hour and the root disk's share of the dirty limits.
    @Test func writebackIsDeferredByDefault() async throws {
        let machine = try await VMFixture.shared.machine()
        #expect(await machine.record.spec.deferWriteback)
        let result = try await machine.withAgent { agent in
            try await sh(agent, "cat /proc/sys/vm/dirty_expire_centisecs /sys/block/vda/bdi/min_ratio")
        }
        #expect(result.out == "360000\n90\n", "\(result)")
    }

    @Test func theGuestClockRunsOnTheTSC() async throws {
        let machine = try await VMFixture.shared.machine()
        let result = try await machine.withAgent { agent in
            try await sh(agent, "cat /sys/devices/system/clocksource/clocksource0/current_clocksource")
        }
        // kvm-clock under KVM; under TCG anything but jiffies, which loses time on a busy host.
        #expect(result.out == (await machine.record.accelerator == "kvm" ? "kvm-clock\n" : "tsc\n"), "\(result)")
    }

    @Test(arguments: [(script: "exit 0", code: Int32(0)), ("exit 7", 7), ("exit 255", 255), ("kill -TERM $$", 143), ("kill -KILL $$", 137)])
    func exitCodesAndSignals(script: String, code: Int32) async throws {
        let machine = try await VMFixture.shared.machine()
        let result = try await machine.withAgent { agent in try await agent.run(ExecRequest(argv: ["sh", "-c", script])) }
        #expect(result.status.shellCode == code)
        if script.contains("kill") { #expect(result.status.signal == code - 128) } else { #expect(result.status.code == code) }
    }

    @Test func missingProgramIsAClearError() async throws {
        let machine = try await VMFixture.shared.machine()
        let error = await #expect(throws: StasisError.self) {
            try await machine.withAgent { agent in try await agent.run(ExecRequest(argv: ["no-such-program"])) }
        }
        #expect(error?.message.contains("no-such-program") == true)
        #expect((error?.cause as? Errno)?.value == ENOENT)
    }

    @Test func tenMebibytesOfOutputArriveIntact() async throws {
        let machine = try await VMFixture.shared.machine()
        let result = try await machine.withAgent { agent in
            try await agent.run(ExecRequest(argv: ["sh", "-c", "head -c 10485760 /dev/urandom > /tmp/big; sha256sum /tmp/big >&2; cat /tmp/big"]))
        }
        #expect(result.status.code == 0)
        #expect(result.stdout.count == 10 << 20)
        let guestDigest = String(decoding: result.stderr, as: UTF8.self).split(separator: " ").first.map(String.init)
        #expect(guestDigest == Sha256.hex(Data(result.stdout)))
    }

    @Test func standardInputIsPipedThrough() async throws {
        let machine = try await VMFixture.shared.machine()
        let input = (0 ..< (1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7919) }
        let digest = try await machine.withAgent { agent -> String in
            let (id, events) = try await agent.exec(ExecRequest(argv: ["sha256sum"], stdin: true))
            try await agent.writeStdin(id, input)
            try await agent.closeStdin(id)
            var out: [UInt8] = []
            for try await event in events {
                if case .output(.stdout, let data) = event { out += data }
                if case .exited(let status) = event { #expect(status.code == 0) }
            }
            return String(decoding: out, as: UTF8.self)
        }
        #expect(digest.hasPrefix(Sha256.hex(Data(input))))
    }

    @Test func timeoutKillsTheProcessGroup() async throws {
        let machine = try await VMFixture.shared.machine()
        let result = try await machine.withAgent { agent in
            try await agent.run(ExecRequest(argv: ["sh", "-c", "sleep 60 & sleep 60"], timeoutMilliseconds: 300))
        }
        #expect(result.status.timedOut)
        #expect(result.status.signal == SIGKILL)
    }

    @Test func signalsReachTheProcess() async throws {
        let machine = try await VMFixture.shared.machine()
        let status = try await machine.withAgent { agent -> Guest.ExitStatus? in
            let (id, events) = try await agent.exec(ExecRequest(argv: ["sleep", "60"]))
            for try await event in events {
                if case .started = event { try await agent.signal(id, SIGINT) }
                if case .exited(let status) = event { return status }
            }
            return nil
        }
        #expect(status?.signal == SIGINT)
    }

    @Test func userEnvironmentAndWorkingFolder() async throws {
        let machine = try await VMFixture.shared.machine()
        let result = try await machine.withAgent { agent in
            try await agent.run(ExecRequest(argv: ["sh", "-c", "id -u; echo $GREETING; pwd; echo $HOME"],
                                            environment: ["GREETING=hi there"], workingDirectory: "/tmp", user: "nobody"))
        }
        #expect(String(decoding: result.stdout, as: UTF8.self) == "65534\nhi there\n/tmp\n/home/nobody\n")
        let unknown = await #expect(throws: StasisError.self) {
            try await machine.withAgent { agent in try await agent.run(ExecRequest(argv: ["true"], user: "nosuchuser")) }
        }
        #expect(unknown?.message.contains("nosuchuser") == true)
    }

    @Test func filesAreWrittenAndRead() async throws {
        let machine = try await VMFixture.shared.machine()
        try await machine.withAgent { agent in
            let payload = Array("line one\nline two\n".utf8)
            try await agent.writeFile("/tmp/written.txt", payload, mode: 0o600)
            #expect(try await agent.readFile("/tmp/written.txt") == payload)
            try await agent.writeFile("/tmp/written.txt", Array("three\n".utf8), append: true)
            #expect(try await sh(agent, "cat /tmp/written.txt; stat -c %a /tmp/written.txt").out == "line one\nline two\nthree\n600\n")
            let missing = await #expect(throws: StasisError.self) { try await agent.readFile("/nonexistent") }
            #expect(missing?.code == .notFound)
        }
    }

    @Test func theAgentSurvivesHostsThatVanish() async throws {
        let machine = try await VMFixture.shared.machine()
        let paths = machine.paths
        for round in 0 ..< 3 {
            // A client that leaves in the middle of a stream of output…
            try await machine.withAgent { agent in
                let (_, events) = try await agent.exec(ExecRequest(argv: ["yes", "round \(round)"]))
                for try await event in events { if case .output = event { break } }
            }
            // …and one that writes half a frame and hangs up.
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in paths.agentSocket(0).path.utf8.enumerated() { raw[i] = b }
            }
            let lock = try #require(try FileLock.tryAcquire(paths.agentLock(0)) ?? FileLock.acquire(paths.agentLock(0)))
            let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 } }
            #expect(connected)
            let half = Array(Codec.frame(id: 9, HostMessage.exec(ExecRequest(argv: ["true"]))).prefix(11))
            _ = half.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
            withExtendedLifetime(lock) {}
        }
        let result = try await machine.withAgent { agent in try await sh(agent, "echo still here") }
        #expect(result.out == "still here\n")
        // The abandoned `yes` processes were hung up, as by a closed terminal. The signal is sent
        // when the agent sees the host leave, and a loaded guest may not have run the last one
        // to its end yet: it gets up to 10 s.
        let left = try await machine.withAgent { agent in
            try await sh(agent, "for i in $(seq 200); do ps | grep -q '[y]es round' || break; sleep 0.05; done; ps | grep -c '[y]es round' || true")
        }
        #expect(left.out.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }

    @Test func isolatedGuestReachesOnlyAllowedHostServices() async throws {
        let env = try await VMFixture.shared.env()
        let machine = try await VMFixture.shared.machine()
        let port = env.hostServicePort
        let result = try await machine.withAgent { agent in
            try await sh(agent, """
            printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.0.2.2 \(port); echo "direct=$?"
            printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.0.2.100 \(port) | tail -n 1; echo
            """)
        }
        #expect(result.out.contains("direct=1"), "the host's loopback service must be refused: \(result.out) \(result.err)")
        #expect(!result.out.hasPrefix("HTTP"))
        #expect(result.out.contains("allowed-service"), "the allowed service must answer: \(result.out) \(result.err)")
    }

    @Test func publishedPortsReachTheGuest() async throws {
        let env = try await VMFixture.shared.env()
        let machine = try await VMFixture.shared.machine()
        _ = try await machine.withAgent { agent in
            try await agent.spawn(ExecRequest(argv: ["httpd", "-f", "-p", "8080", "-h", "/www"]))
        }
        var body = ""
        for _ in 0 ..< 50 where !body.contains("guest-page") {
            body = (try? await HostTool.run("curl", ["-s", "-m", "2", "http://127.0.0.1:\(env.forwardedPort)/"]).standardOutput) ?? ""
        }
        #expect(body == "guest-page\n")
    }

    @Test func twoMachinesAtOnceAndAKilledOneFails() async throws {
        let env = try await VMFixture.shared.env()
        let shared = try await VMFixture.shared.machine()
        let other = try await VMFixture.boot(env, name: "other", spec: MachineSpec(image: "bb", memoryMiB: 256, network: .none))
        // Both answer at once, and each has its own disk.
        async let a = shared.withAgent { agent in try await sh(agent, "echo shared > /root/who; sync; cat /root/who") }
        async let b = other.withAgent { agent in try await sh(agent, "echo other > /root/who; sync; cat /root/who; ls /sys/class/net") }
        let (ra, rb) = try await (a, b)
        #expect(ra.out == "shared\n")
        #expect(rb.out == "other\nlo\n")  // --network none: no NIC at all

        // SIGKILL the second machine's QEMU: it turns failed with its console tail; the first is fine.
        let pid = try #require(await other.record.pid)
        kill(pid, SIGKILL)
        #expect(await env.store.engine.waitForExit(pid: pid, machineID: other.id, timeout: .seconds(10)))
        let failed = try await other.refresh()
        #expect(failed.state == .failed)
        #expect(failed.failure?.contains("Console log tail") == true)
        #expect(failed.failure?.contains("stasis-init") == true)
        #expect(try await shared.withAgent { agent in try await sh(agent, "cat /root/who") }.out == "shared\n")
        try await other.remove(force: false)
        #expect(throws: StasisError.self) { try env.store.find("other") }
    }

    @Test func stopShutsDownCleanly() async throws {
        let env = try await VMFixture.shared.env()
        let machine = try await VMFixture.boot(env, name: "stopper", spec: MachineSpec(image: "bb", memoryMiB: 256, network: .none))
        try await machine.withAgent { agent in _ = try await sh(agent, "echo kept > /root/kept") }
        let pid = try #require(await machine.record.pid)
        try await machine.stop(timeout: .seconds(20))
        #expect(await machine.state == .stopped)
        #expect(!env.store.engine.isAlive(pid: pid, machineID: machine.id))
        // The guest synced and unmounted: the disk overlay is clean and holds the file.
        try await HostTool.run("qemu-img", ["check", "-q", machine.paths.disk.path])
        let stopped = await #expect(throws: StasisError.self) { try await machine.withAgent { _ in () } }
        #expect(stopped?.code == .invalidState)
        try await machine.remove(force: false)
    }
}
