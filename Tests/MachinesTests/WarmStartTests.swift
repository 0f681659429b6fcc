import Foundation
@testable import Machines
import Snapshots
import StasisCore
import Testing

/// `stasis run` restores the image's boot snapshot instead of booting; the machine it gives
/// behaves like a booted one.
@Suite("Warm start", .timeLimit(.minutes(10)))
struct WarmStartTests {
    @Test func warmMachinesAreTheirOwnAndColdStillBoots() async throws {
        let env = try await VMFixture.shared.env()
        let cli = CLI(home: env.home)
        // 320M: a size no other test uses, so this test makes the boot snapshot itself.
        let first = try cli("run", "-d", "--name", "warm-a", "--network", "none", "--memory", "320M", "bb")
        #expect(first.code == 0, "\(first.stderr)")
        #expect(first.stderr.contains("made boot snapshot"), "\(first.stderr)")
        let second = try cli("run", "-d", "--name", "warm-b", "--network", "none", "--memory", "320M", "bb")
        #expect(second.code == 0, "\(second.stderr)")
        #expect(!second.stderr.contains("made boot snapshot"), "\(second.stderr)")
        let a = try env.store.find("warm-a")
        let b = try env.store.find("warm-b")
        for record in [a, b] { if let pid = record.pid { VMFixture.killAtExit(pid) } }
        let boot = try #require(a.restoredFrom)
        #expect(b.restoredFrom == boot)
        let manifest = try SnapshotStore(home: env.home).manifest(boot)
        #expect(manifest.tag?.hasPrefix("boot:bb:") == true)
        #expect(manifest.spec.memoryMiB == 320)

        // Own hostname, RNG, clock and disk; nothing of the machine that made the snapshot.
        func exec(_ name: String, _ script: String) throws -> String {
            let r = try cli("exec", name, "sh", "-c", script)
            #expect(r.code == 0, "\(name): \(r.stderr)")
            return r.stdout
        }
        #expect(try exec("warm-a", "hostname") == "warm-a\n")
        #expect(try exec("warm-b", "hostname") == "warm-b\n")
        #expect(try exec("warm-a", "head -c 16 /dev/urandom | od -An -tx1") != exec("warm-b", "head -c 16 /dev/urandom | od -An -tx1"))
        let before = Date().timeIntervalSince1970
        let clock = try #require(Double(try exec("warm-b", "date +%s").trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(clock > before - 2 && clock < Date().timeIntervalSince1970 + 1)
        _ = try exec("warm-a", "echo mine > /root/own.txt; sync")
        #expect(try exec("warm-b", "cat /root/own.txt 2>/dev/null || echo absent") == "absent\n")

        // The boot snapshot is in use while its machines exist.
        #expect(try cli("snapshot", "rm", boot).code == 125)

        // --cold boots the kernel.
        let cold = try cli("run", "--rm", "--cold", "--network", "none", "--memory", "320M", "bb", "sh", "-c", "cat /run/stasis/generation 2>/dev/null || echo 0")
        #expect(cold.code == 0, "\(cold.stderr)")
        #expect(cold.stderr.contains("running on"), "\(cold.stderr)")
        #expect(try exec("warm-a", "cat /run/stasis/generation") == "1\n", "a warm machine is generation 1, like any restore")

        for name in ["warm-a", "warm-b"] { _ = try cli("rm", "-f", name) }
        #expect(try cli("snapshot", "rm", boot).code == 0, "removable once no machine uses it")
    }
}
