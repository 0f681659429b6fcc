import Foundation
import Guest
import Images
@testable import Machines
import ChunkStore
import Snapshots
import StasisCore
import Testing

/// Snapshot, restore and fork with real VMs. One source machine is booted, given state in RAM, on
/// disk and in a running server, and snapshotted once; the tests restore and fork that snapshot.
actor SnapshotFixture {
    static let shared = SnapshotFixture()
    private var snapshot: Task<SnapshotManifest, any Error>?

    /// A snapshot of a machine with: a file on disk, a file in tmpfs (RAM), a shell whose variable
    /// lives only in its memory, an HTTP server listening on 8080, and a clock set to 2001.
    func manifest() async throws -> SnapshotManifest {
        if snapshot == nil {
            snapshot = Task {
                let env = try await VMFixture.shared.env()
                let source = try await VMFixture.boot(env, name: "snap-source", spec: MachineSpec(image: "bb", memoryMiB: 256))
                try await source.withAgent { agent in
                    _ = try await sh(agent, "echo on-disk > /root/disk.txt; echo in-ram > /tmp/ram.txt; sync")
                    _ = try await sh(agent, "mkdir -p /etc/stasis/restored.d; printf '#!/bin/sh\\necho generation $STASIS_GENERATION > /tmp/hook.txt\\n' > /etc/stasis/restored.d/10-mark; chmod +x /etc/stasis/restored.d/10-mark")
                    _ = try await agent.spawn(ExecRequest(argv: ["httpd", "-f", "-p", "8080", "-h", "/www"]))
                    _ = try await agent.spawn(ExecRequest(argv: ["sh", "-c", "SECRET=kept-in-memory; while sleep 0.2; do echo $SECRET > /tmp/heartbeat; done"]))
                    try await agent.setClock(to: Date(timeIntervalSince1970: 978_307_200))  // 2001-01-01
                }
                return try await Snapshotter(home: env.home, machines: env.store).take(source, tag: "fixture", leaveRunning: false)
            }
        }
        guard let snapshot else { throw StasisError(.internalError, "no snapshot") }
        return try await snapshot.value
    }
}

@Suite("Snapshots with real VMs", .timeLimit(.minutes(10)))
struct SnapshotVMTests {
    func restored(_ name: String, ports: [PortForward]? = nil) async throws -> (VMFixture.Environment, Machine) {
        let env = try await VMFixture.shared.env()
        let manifest = try await SnapshotFixture.shared.manifest()
        let machine = try await Snapshotter(home: env.home, machines: env.store).restore(manifest.id, name: name, ports: ports)
        if let pid = await machine.record.pid { VMFixture.killAtExit(pid) }
        return (env, machine)
    }

    @Test func aSnapshotIsCompleteAndChecksummed() async throws {
        let env = try await VMFixture.shared.env()
        let manifest = try await SnapshotFixture.shared.manifest()
        #expect(manifest.format == SnapshotManifest.currentFormat)
        #expect(manifest.engine.name == "qemu" && manifest.engine.version.contains("QEMU"))
        #expect(manifest.memory == nil && manifest.memoryFrames != nil, "RAM is kept apart from the device state (x-ignore-shared), in the chunk store")
        #expect((manifest.memoryAddedBytes ?? 0) > 0)
        #expect(!FileManager.default.fileExists(atPath: SnapshotStore(home: env.home).directory(manifest.id).appendingPathComponent("memory").path),
                "no raw RAM file is left in the snapshot")
        #expect(manifest.state.size < 1 << 20, "device state only: \(manifest.state.size) bytes")
        #expect(manifest.parts.allSatisfy { $0.digest.hasPrefix("sha256b:") })
        #expect(manifest.tag == "fixture")
        try SnapshotStore(home: env.home).verify(manifest, deep: true)
        // The source machine was stopped afterwards.
        #expect(try env.store.find("snap-source").state == .stopped)
    }

    @Test func restoreBringsBackProcessesMemoryDiskAndListeningSockets() async throws {
        let port = try VMFixture.freePort()
        let (_, machine) = try await restored("restored-1", ports: [PortForward(hostPort: port, guestPort: 8080)])
        let out = try await machine.withAgent { agent in
            try await sh(agent, "cat /root/disk.txt /tmp/ram.txt; sleep 0.5; cat /tmp/heartbeat; cat /run/stasis/generation; hostname")
        }
        #expect(out.out == "on-disk\nin-ram\nkept-in-memory\n1\nrestored-1\n", "\(out)")
        // The restored.d hook ran with the new generation.
        let hook = try await machine.withAgent { agent in
            try await sh(agent, "for i in $(seq 100); do [ -s /tmp/hook.txt ] && break; sleep 0.05; done; cat /tmp/hook.txt")
        }
        #expect(hook.out == "generation 1\n")
        // The server started before the snapshot answers without being restarted.
        var body = ""
        for _ in 0 ..< 50 where body.isEmpty {
            body = (try? await HostTool.run("curl", ["-s", "-m", "2", "http://127.0.0.1:\(port)/"]).standardOutput) ?? ""
        }
        #expect(body == "guest-page\n")
    }

    @Test func restoreSetsTheClockHoweverOldTheSnapshot() async throws {
        let (_, machine) = try await restored("restored-clock")
        // The guest read its clock somewhere between `before` and `after`; a loaded host can make
        // that window wide, so the 1 s bound is checked against the window's edges. Busybox's
        // `date` prints whole seconds, which moves the lower edge down by one more.
        let before = Date().timeIntervalSince1970
        let guest = try await machine.withAgent { agent in try await sh(agent, "date +%s").out }
        let after = Date().timeIntervalSince1970
        let seconds = try #require(Double(guest.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(seconds > before - 2 && seconds < after + 1, "guest clock \(seconds), host \(before)...\(after)")
    }

    @Test func forksAreIndependentAndDiffer() async throws {
        let env = try await VMFixture.shared.env()
        let manifest = try await SnapshotFixture.shared.manifest()
        let forks = try await Snapshotter(home: env.home, machines: env.store).fork(manifest.id, count: 2, namePrefix: "fork")
        for f in forks { if let pid = await f.record.pid { VMFixture.killAtExit(pid) } }
        #expect(forks.count == 2)
        var outputs: [String] = []
        for (i, fork) in forks.enumerated() {
            let out = try await fork.withAgent { agent in
                try await sh(agent, "echo fork\(i) > /root/shared-path.txt; echo fork\(i) > /tmp/ram-path.txt; sync; head -c 32 /dev/urandom | sha256sum")
            }
            outputs.append(out.out)
        }
        #expect(outputs[0] != outputs[1], "the RNG was reseeded differently in each fork")
        for (i, fork) in forks.enumerated() {
            let out = try await fork.withAgent { agent in try await sh(agent, "cat /root/shared-path.txt /tmp/ram-path.txt /root/disk.txt; hostname") }
            let name = await fork.name
            #expect(out.out == "fork\(i)\nfork\(i)\non-disk\n\(name)\n")
        }
        // The snapshot is untouched by the forks that wrote over its memory and disk.
        try SnapshotStore(home: env.home).verify(manifest)
        for fork in forks { try await fork.remove(force: true) }
    }

    @Test func leaveRunningSnapshotsAndRestoresTheLaterState() async throws {
        let (env, machine) = try await restored("restored-chain")
        let snapshotter = Snapshotter(home: env.home, machines: env.store)
        // `early` (1 MiB, more than the clusters a later small write copies up) stays in the
        // machine's first overlay, below the one the second snapshot freezes: collapsing must
        // carry it. Restored guests drop their page cache before reading it back, so the bytes
        // come from the disk, not from the RAM the snapshot kept.
        let early = try await machine.withAgent { agent in
            try await sh(agent, "echo v1 > /root/version; head -c 1048576 /dev/urandom > /root/early; sync; sha256sum < /root/early").out
        }
        let first = try await snapshotter.take(machine, tag: nil, leaveRunning: true)
        try await machine.withAgent { agent in _ = try await sh(agent, "echo v2 > /root/version") }
        let second = try await snapshotter.take(machine, tag: nil, leaveRunning: true)
        #expect(await machine.state == .running)
        #expect(first.parent == (try await SnapshotFixture.shared.manifest().id))
        // Rewind: each snapshot restores its own moment.
        for (snapshot, expected) in [(first, "v1"), (second, "v2")] {
            let back = try await snapshotter.restore(snapshot.id, name: "rewind-\(expected)")
            if let pid = await back.record.pid { VMFixture.killAtExit(pid) }
            #expect(try await back.withAgent { agent in try await sh(agent, "echo 3 > /proc/sys/vm/drop_caches; cat /root/version; sha256sum < /root/early") }.out == "\(expected)\n\(early)")
            try await back.remove(force: true)
        }
        // The running machine goes on from where it was.
        #expect(try await machine.withAgent { agent in try await sh(agent, "cat /root/version") }.out == "v2\n")
        // The snapshot the machine was restored from is its disk's base and the parent of both
        // new snapshots: it is not removed. One nothing depends on is.
        let fixture = try await SnapshotFixture.shared.manifest()
        let refused = await #expect(throws: StasisError.self) {
            try await SnapshotStore(home: env.home).remove(fixture.id, force: false, machines: try env.store.list())
        }
        #expect(refused?.message.contains("restored-chain") == true, "\(String(describing: refused))")
        try await machine.remove(force: true)
        try await SnapshotStore(home: env.home).remove(second.id, force: false, machines: try env.store.list())
        #expect(throws: StasisError.self) { try SnapshotStore(home: env.home).manifest(second.id) }
        try await SnapshotStore(home: env.home).remove(first.id, force: false, machines: try env.store.list())
    }

    /// A flipped byte in any part is found by its checksum before QEMU sees it. RAM frames are
    /// shared with the fixture, so the damaged memory is a damaged copy of one of its chunks that
    /// only the copied snapshot lists. A missing chunk ("missing memory") is not looked for before
    /// an eager restore; writing the RAM finds it, by frame, before QEMU starts.
    @Test(arguments: ["state", "memory", "disk.qcow2", "missing memory"])
    func aDamagedSnapshotIsRefused(part: String) async throws {
        let missing = part == "missing memory"
        let env = try await VMFixture.shared.env()
        let original = try await SnapshotFixture.shared.manifest()
        // Damage a copy, never the shared fixture.
        let store = SnapshotStore(home: env.home)
        let copyID = "damaged\(part.prefix(3))"
        let copy = store.directory(copyID)
        try? FileManager.default.removeItem(at: copy)
        try await HostTool.run("cp", ["-a", "--sparse=always", store.directory(original.id).path, copy.path])
        var manifest = original
        manifest.id = copyID
        var file = copy.appendingPathComponent(part)
        // Device state is a delta of a few dozen bytes over a base state: its middle.
        var offset: UInt64 = part == "state" ? original.state.size / 2 : 100
        var victimFrame: Int?
        // A session's gc in this home must not take the damaged chunk for garbage before the
        // copy's manifest lists it.
        try FileLock.withLock(store.chunkWritersLock, shared: true) {
            if part.hasSuffix("memory") {
                let frames = try #require(original.memoryFrames)
                let victim = frames.nonZeroFrames[frames.nonZeroFrames.count / 2]
                let ref = try #require(frames.chunk(ofFrame: victim))
                let fake = ChunkRef(hash: (0 ..< 32).map { _ in String(format: "%02x", UInt8.random(in: 0 ... 255)) }.joined(),
                                    rawSize: ref.rawSize, storedSize: ref.storedSize)
                let chunks = try store.chunkStore()
                file = URL(fileURLWithPath: chunks.path(of: fake.hash))
                try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
                if !missing { try FileManager.default.copyItem(atPath: chunks.path(of: ref.hash), toPath: file.path) }
                manifest.memoryFrames = try frames.replacingChunk(ofFrame: victim, with: fake)
                offset = UInt64(fake.storedSize / 2)
                victimFrame = victim
            }
            try AtomicFile.writeJSON(manifest, to: copy.appendingPathComponent("manifest.json"))
        }
        defer { if part.hasSuffix("memory") { try? FileManager.default.removeItem(at: file) } }
        // Verified once before the damage: the damage must be found though the copy's files were
        // hashed already (a write changes their identity).
        if !missing { try store.verify(manifest) }
        // Before the damage the victim frame reads back (by its frame checksum, as a restore
        // reads it; its name is made up), so the restore below can fail only by the damage.
        if part == "memory", let victimFrame { _ = try store.chunkedMemory(manifest).readFrame(victimFrame) }
        if missing {
            #expect(throws: StasisError.self, "a plain verify still looks for every chunk") { try store.verify(manifest) }
        } else if part == "state", var inline = manifest.stateInline {
            // A small state delta lives in the manifest: the damage goes there.
            inline[inline.count / 2] ^= 0x40
            manifest.stateInline = inline
            try AtomicFile.writeJSON(manifest, to: copy.appendingPathComponent("manifest.json"))
        } else {
            let handle = try FileHandle(forUpdating: file)
            try handle.seek(toOffset: offset)
            let byte = try #require(try handle.read(upToCount: 1)).first ?? 0
            try handle.seek(toOffset: offset)
            try handle.write(contentsOf: Data([byte ^ 0x40]))
            try handle.close()
        }
        let error = await #expect(throws: StasisError.self) {
            _ = try await Snapshotter(home: env.home, machines: env.store).restore(copyID, name: "never-\(part.prefix(3))")
        }
        #expect(error?.code == .corrupted)
        #expect(error?.message.contains(missing ? "memory" : part) == true && error?.message.contains(copyID) == true, "\(String(describing: error))")
        if let victimFrame { #expect(error?.message.contains("frame \(victimFrame) (") == true, "\(String(describing: error))") }
        #expect(throws: StasisError.self, "no machine was started") { try env.store.find("never-\(part.prefix(3))") }
        try FileManager.default.removeItem(at: copy)
    }

    @Test func aSnapshotOfAnotherDeviceLayoutIsRefusedByName() async throws {
        let env = try await VMFixture.shared.env()
        let original = try await SnapshotFixture.shared.manifest()
        var manifest = original
        manifest.engine.deviceLayout.append("virtio-gpu-device")
        let error = await #expect(throws: StasisError.self) {
            try await Snapshotter(home: env.home, machines: env.store).checkCompatible(manifest)
        }
        #expect(error?.message.contains("virtio-gpu-device") == true)
        manifest = original
        manifest.engine.version = "QEMU emulator version 1.0"
        let version = await #expect(throws: StasisError.self) {
            try await Snapshotter(home: env.home, machines: env.store).checkCompatible(manifest)
        }
        #expect(version?.message.contains("1.0") == true)
    }
}

@Suite("Snapshots survive kill -9", .timeLimit(.minutes(10)))
struct SnapshotCrashTests {
    /// SIGKILL of stasis, or of QEMU, at any moment of a snapshot leaves every earlier snapshot
    /// restorable and no half snapshot listed.
    @Test func killingStasisOrQEMUMidSnapshotLosesNothing() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let snapshotter = Snapshotter(home: env.home, machines: env.store)
        let machine = try await snapshotter.restore(fixture.id, name: "crash-victim")
        if let pid = await machine.record.pid { VMFixture.killAtExit(pid) }
        let good = try await snapshotter.take(machine, tag: "good", leaveRunning: true)
        let store = SnapshotStore(home: env.home)

        for round in 0 ..< 6 {
            let process = Process()
            process.executableURL = CLI.binary
            process.arguments = ["snapshot", "crash-victim", "--leave-running"]
            process.environment = ProcessInfo.processInfo.environment.merging(["STASIS_HOME": env.home.root.path]) { $1 }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // The kill lands at a different moment of the snapshot each round.
            try await Task.sleep(for: .milliseconds(40 * round))
            if round % 3 == 2, let qemu = try env.store.find("crash-victim").pid {
                kill(qemu, SIGKILL)
            } else {
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()

            // (Other tests keep deliberately damaged snapshots in this home: check ours.)
            for snapshot in try store.list() where snapshot.machineName == "crash-victim" { try store.verify(snapshot) }
            // Sessions in this home may be snapshotting right now: count only abandoned folders
            // (nobody holds their lock), which the next snapshot sweeps.
            let hidden = try FileManager.default.contentsOfDirectory(atPath: env.home.snapshots.path).filter { name in
                guard name.hasPrefix(".staging") else { return false }
                let lock = try? FileLock.tryAcquire(env.home.snapshots.appendingPathComponent(name).appendingPathComponent(".lock"))
                return withExtendedLifetime(lock) { lock != nil }
            }
            #expect(hidden.count <= 1, "staging folders are swept once their builder is gone: \(hidden)")

            // Keep a running victim for the next round.
            let victim = try env.store.find("crash-victim")
            if victim.state != .running {
                try await Machine(record: victim, store: env.store).remove(force: true)
                let again = try await snapshotter.restore(good.id, name: "crash-victim")
                if let pid = await again.record.pid { VMFixture.killAtExit(pid) }
            } else {
                // A kill between `stop` and `cont` may leave the guest paused: resume it.
                try await QMPClient.connect(socketPath: MachinePaths(home: env.home, id: victim.id).qmpSocket.path) { qmp in
                    try await qmp.execute("cont")
                }
            }
        }
        // The snapshot taken before all this still restores, whole.
        let back = try await snapshotter.restore(good.id, name: "after-crashes")
        if let pid = await back.record.pid { VMFixture.killAtExit(pid) }
        #expect(try await back.withAgent { agent in try await sh(agent, "cat /root/disk.txt") }.out == "on-disk\n")
        try await back.remove(force: true)
        try await Machine.open("crash-victim", store: env.store).remove(force: true)
    }
}
