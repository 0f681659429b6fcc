import ChunkStore
import Foundation
import Guest
import Images
@testable import Machines
import Snapshots
import StasisCore
import Testing

/// Snapshots' RAM in the chunk store: frames shared between snapshots, small deltas, gc and df.
@Suite("Snapshot chunk store", .timeLimit(.minutes(10)))
struct SnapshotStorageTests {
    /// Budgets for a 256 MiB guest restored and snapshotted again under TCG: what the restore's
    /// own steps (agent requests, timers, page cache) dirty, as pages patched over the parent's
    /// frames, each a delta against the page it replaces. Measured: 51 KB with no change, 67 KB
    /// beyond the 1 MiB written (docs/chunk-store.md); with whole pages they were 134 KB and
    /// 0.2 MB, with whole frames 0.7 and 0.77 MB.
    static let noChangeBudget = 150_000
    static let smallChangeOverhead = 300_000

    @Test func snapshotsOfOneMachineShareFramesAndStayWithinBudget() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let snapshotter = Snapshotter(home: env.home, machines: env.store)
        let fixtureFrames = try #require(fixture.memoryFrames)

        // No change: restored and snapshotted again at once.
        let quiet = try await snapshotter.restore(fixture.id, name: "frames-quiet")
        if let pid = await quiet.record.pid { VMFixture.killAtExit(pid) }
        let unchanged = try await snapshotter.take(quiet, tag: nil, leaveRunning: false)
        let unchangedFrames = try #require(unchanged.memoryFrames)
        let shared = Set(unchangedFrames.chunks).intersection(fixtureFrames.chunks)
        #expect(shared.count * 10 > fixtureFrames.chunks.count * 8, "most frames are the parent's: \(shared.count) of \(fixtureFrames.chunks.count)")
        #expect(unchangedFrames.patchedFrames > 0, "frames the restore touched are stored as page patches")
        let added = try #require(unchanged.memoryAddedBytes)
        #expect(added <= Self.noChangeBudget, "no change added \(added) bytes")

        // A small change: 1 MiB of random bytes in tmpfs (RAM) and a new process.
        let busy = try await snapshotter.restore(fixture.id, name: "frames-busy")
        if let pid = await busy.record.pid { VMFixture.killAtExit(pid) }
        try await busy.withAgent { agent in
            _ = try await sh(agent, "head -c 1048576 /dev/urandom > /tmp/noise")
            _ = try await agent.spawn(ExecRequest(argv: ["sh", "-c", "while sleep 1; do :; done"]))
        }
        let changed = try await snapshotter.take(busy, tag: nil, leaveRunning: false)
        let changedAdded = try #require(changed.memoryAddedBytes)
        #expect(changedAdded <= (1 << 20) + Self.smallChangeOverhead, "a 1 MiB change added \(changedAdded) bytes")
        #expect(changedAdded >= 1 << 20, "random bytes do not compress: \(changedAdded)")
        print("chunk store: fixture \(fixtureFrames.storedBytes) B stored, no change +\(added) B, 1 MiB change +\(changedAdded) B")

        // The frame list is a file of its own: listings read only the small manifest.
        let store = SnapshotStore(home: env.home)
        let listed = try #require(try store.list().first { $0.id == changed.id })
        #expect(listed.memoryFrames == nil && listed.memoryFramesFile?.file == SnapshotStore.memoryFramesName)
        #expect(listed.memoryStoredBytes == changed.memoryFrames?.storedBytes && !listed.ramInState)
        #expect(try store.manifest(changed.id).memoryFrames == changed.memoryFrames)
        let manifestBytes = try Data(contentsOf: store.directory(changed.id).appendingPathComponent("manifest.json")).count
        #expect(manifestBytes < 16_384, "manifest.json is \(manifestBytes) bytes")
        // A damaged frame list fails by name, and the snapshot can still be removed.
        let framesFile = store.directory(unchanged.id).appendingPathComponent(SnapshotStore.memoryFramesName)
        var damaged = try Data(contentsOf: framesFile)
        damaged[damaged.count / 2] ^= 0x40
        try damaged.write(to: framesFile)
        let error = #expect(throws: StasisError.self) { try store.find(unchanged.id) }
        #expect(error?.code == .corrupted && error?.message.contains(unchanged.id) == true, "\(String(describing: error))")
        let removal = try CLI(home: env.home)("snapshot", "rm", unchanged.id)
        #expect(removal.code == 0 && !FileManager.default.fileExists(atPath: store.directory(unchanged.id).path), "\(removal)")

        try await store.remove(changed.id, force: false, machines: try env.store.list())
        for name in ["frames-quiet", "frames-busy"] { try await Machine.open(name, store: env.store).remove(force: true) }
    }

    /// The guest kernel's pages are stored as deltas against the host's vmlinux: plain, its ~600
    /// non-zero frames cost ~21 KB each (DESIGN.md: 10 MB of every boot snapshot); as deltas
    /// they cost what the guest changed (measured ~6 KB on average, most of it .data and .bss).
    @Test func kernelFramesAreDeltasAgainstVmlinux() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let frames = try #require(fixture.memoryFrames)
        let kernel = try #require(SnapshotStore(home: env.home).kernelReference(fixture.kernel))
        #expect(frames.reference == kernel.clipped(to: frames.totalSize).identity)
        #expect(frames.deltaFrames >= 300, "\(frames.deltaFrames) kernel frames stored as deltas")
        #expect(frames.deltaBytes < frames.deltaFrames * 12_000, "\(frames.deltaBytes) bytes for \(frames.deltaFrames) frames")
        print("chunk store: \(frames.deltaFrames) kernel frames in \(frames.deltaBytes) B of deltas; \(frames.storedBytes) B in all")

        // The store keeps its own link to those bytes. In a home of its own (other tests restore
        // from the shared one meanwhile): a missing link comes back from the installed kernel,
        // and without that kernel the snapshot is refused, saying what to do.
        #expect(kernel.url.path.hasPrefix(env.home.references.path) && kernel.url.lastPathComponent == String(kernel.identity.digest.dropFirst(7)))
        let home = StasisHome(root: URL(fileURLWithPath: "/tmp/stasis-references-\(UInt32.random(in: 0 ... .max))"))
        defer { try? FileManager.default.removeItem(at: home.root) }
        try FileManager.default.createDirectory(at: home.root, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: home.kernels, withDestinationURL: env.home.kernels.resolvingSymlinksInPath())
        let store = SnapshotStore(home: home)
        let identity = try #require(frames.reference)
        let link = home.references.appendingPathComponent(kernel.url.lastPathComponent)
        #expect(!FileManager.default.fileExists(atPath: link.path))
        try store.checkReference(fixture, identity)
        #expect(FileManager.default.fileExists(atPath: link.path), "linked from the installed kernel")
        try FileManager.default.removeItem(at: link)
        var elsewhere = fixture
        elsewhere.kernel = "0.0.0-not-installed"
        let missing = #expect(throws: StasisError.self) { try store.checkReference(elsewhere, identity) }
        #expect(missing?.code == .notFound && missing?.description.contains("import") == true, "\(String(describing: missing))")
    }

    /// gc frees exactly the chunks no snapshot lists; kill -9 at any moment of it loses nothing a
    /// snapshot needs. Runs in a home of its own: gc there sees only this test's snapshots.
    @Test func gcFreesOnlyUnlistedChunksAndSurvivesKill9() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let home = try await VMFixture.shared.secondaryHome()
        let archive = home.root.appendingPathComponent("fixture.stasis.zst")
        _ = try await SnapshotArchive(home: env.home).export(fixture.id, to: archive)
        let first = try await SnapshotArchive(home: home).importArchive(from: archive, tag: "first")
        let snapshotter = Snapshotter(home: home)
        let machine = try await snapshotter.restore(first.id, name: "gc-source")
        if let pid = await machine.record.pid { VMFixture.killAtExit(pid) }
        try await machine.withAgent { agent in _ = try await sh(agent, "head -c 262144 /dev/urandom > /tmp/second") }
        let second = try await snapshotter.take(machine, tag: "second", leaveRunning: false)
        try await machine.remove(force: true)
        let store = SnapshotStore(home: home)
        // The chunks the store holds as files of their own (page patches are in packs).
        // (and the base lists and base device states their deltas are over).
        let firstChunks = Set(try #require(first.memoryFrames).storeChunks + [first.memoryFramesBase?.hash, first.stateBase?.hash].compactMap { $0 })
        let secondChunks = Set(try #require(second.memoryFrames).storeChunks + [second.memoryFramesBase?.hash, second.stateBase?.hash].compactMap { $0 })
        #expect(first.stateBase == nil && second.stateBase != nil, "an import keeps its device state whole; a snapshot over it stores a base")
        #expect(firstChunks.intersection(secondChunks).count * 10 > firstChunks.count * 8)

        // Garbage: chunks no manifest lists, as a killed snapshot would leave.
        let chunks = try store.chunkStore()
        for _ in 0 ..< 600 { _ = try chunks.put((0 ..< 4096).map { _ in UInt8.random(in: 0 ... 255) }) }
        try chunks.sync()

        for round in 0 ..< 5 {
            let process = Process()
            process.executableURL = CLI.binary
            process.arguments = ["gc"]
            process.environment = ProcessInfo.processInfo.environment.merging(["STASIS_HOME": home.root.path]) { $1 }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // The kill lands at a different moment of the gc each round (or after it, the last).
            try await Task.sleep(for: .milliseconds(25 * round))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            try store.verify(first, deep: true)
            try store.verify(second, deep: true)
        }
        _ = try store.collectGarbage(machines: { [] })
        let kept = Set(try chunks.allHashes())
        #expect(kept == firstChunks.union(secondChunks), "every garbage chunk is gone, every listed one kept: extra \(kept.subtracting(firstChunks.union(secondChunks))), missing \(firstChunks.union(secondChunks).subtracting(kept))")

        let usage = try #require(try CLI(home: home)("df", "--json").stdout.data(using: .utf8))
        let df = try JSONSerialization.jsonObject(with: usage) as? [String: Any]
        #expect((df?["dedupRatio"] as? Double ?? 0) > 1.6, "two snapshots sharing most frames: \(String(describing: df))")

        // Removing a snapshot frees exactly its own frames, and the packs of page patches only it lists.
        let own = try chunks.allChunks().filter { secondChunks.contains($0.hash) && !firstChunks.contains($0.hash) }
        let firstPacks = Set(try #require(first.memoryFrames).packs)
        let secondPacks = Set(try #require(second.memoryFrames).packs)
        let ownPacks = try chunks.allPacks().filter { secondPacks.contains($0.name) && !firstPacks.contains($0.name) }
        try await store.remove(second.id, force: false, machines: [])
        let freed = try store.collectGarbage(machines: { [] })
        #expect(freed.chunksRemoved == own.count && freed.packsRemoved == ownPacks.count)
        #expect(freed.bytesFreed == own.reduce(0) { $0 + $1.size } + ownPacks.reduce(0) { $0 + $1.size })
        #expect(Set(try chunks.allHashes()) == firstChunks)
        let packsLeft = Set(try chunks.allPacks().map(\.name))
        #expect(packsLeft == firstPacks)
        let back = try await snapshotter.restore(first.id, name: "gc-after")
        if let pid = await back.record.pid { VMFixture.killAtExit(pid) }
        #expect(try await back.withAgent { agent in try await sh(agent, "cat /root/disk.txt /tmp/ram.txt") }.out == "on-disk\nin-ram\n")
        try await back.remove(force: true)

        // A snapshot over it whose frame list is damaged: gc removes nothing and names the list
        // and the way on; df still answers, counting it from its manifest.
        let third = try await snapshotter.take(try await snapshotter.restore(first.id, name: "gc-third"), tag: "third", leaveRunning: false)
        let framesFile = store.directory(third.id).appendingPathComponent(SnapshotStore.memoryFramesName)
        var damaged = try Data(contentsOf: framesFile)
        damaged[damaged.count / 2] ^= 0x40
        try damaged.write(to: framesFile)
        let before = try chunks.allHashes()
        let refused = try CLI(home: home)("gc")
        #expect(refused.code != 0 && refused.stderr.contains("stasis snapshot rm \(third.id)")
                && refused.stderr.contains(framesFile.path) && !refused.stderr.contains("manifest.json"), "\(refused)")
        #expect(try chunks.allHashes() == before, "a gc that cannot read a list removes nothing")
        let listed = try CLI(home: home)("df", "--json")
        let counted = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any]
        #expect(listed.code == 0 && counted?["snapshots"] as? Int == 2 && counted?["damagedSnapshots"] as? Int == 1, "\(listed)")
        try await Machine.open("gc-third", store: MachineStore(home: home)).remove(force: true)
        // What the message says works: the snapshot goes, and gc runs again.
        #expect(try CLI(home: home)("snapshot", "rm", third.id).code == 0)
        _ = try store.collectGarbage(machines: { [] })
        #expect(Set(try chunks.allHashes()) == firstChunks)
    }

    /// Memory the guest freed is zeroed as it is freed (`init_on_free=1`, the default), so a
    /// deleted file's page cache is stored as nothing; `--compact` also drops clean page cache,
    /// so a file still on disk costs nothing in RAM either, where without it its pages are stored.
    @Test func freedMemoryAndCompactedPageCacheAreStoredAsNothing() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        #expect(fixture.spec.zeroFreedMemory, "machines boot with init_on_free=1 unless told not to")
        let snapshotter = Snapshotter(home: env.home, machines: env.store)
        var added: [String: Int] = [:]
        for (name, keep, compact) in [("freed", false, false), ("cached", true, false), ("compacted", true, true)] {
            let machine = try await snapshotter.restore(fixture.id, name: "compact-\(name)")
            if let pid = await machine.record.pid { VMFixture.killAtExit(pid) }
            // 24 MiB of random bytes through the page cache, synced, then deleted or kept.
            let wrote = try await machine.withAgent { agent in
                try await sh(agent, "head -c 25165824 /dev/urandom > /root/big && sync \(keep ? "" : "&& rm /root/big") && echo done")
            }
            #expect(wrote.out == "done\n", "\(wrote)")
            if compact { try await Snapshotter.compact(machine) }
            let manifest = try await snapshotter.take(machine, tag: nil, leaveRunning: false)
            added[name] = manifest.memoryAddedBytes ?? 0
            try await SnapshotStore(home: env.home).remove(manifest.id, force: false, machines: try env.store.list())
            try await machine.remove(force: true)
        }
        let freed = try #require(added["freed"]), cached = try #require(added["cached"]), compacted = try #require(added["compacted"])
        #expect(freed < 4_000_000, "pages zeroed as they are freed cost nothing: \(freed)")
        #expect(cached > 20_000_000, "a kept file's page cache is stored: \(cached)")
        #expect(compacted < 4_000_000, "dropped and zeroed, it costs nothing: \(compacted)")
        print("freed 24 MiB stored \(freed) B; kept in page cache \(cached) B, \(compacted) B with --compact")
    }

    /// A session's snapshots each sit on the last one's disk; when layers of one tier would
    /// pile up (here 2), they are merged one tier up onto what lies below them, so no restore
    /// reads through a long chain of layers, and the snapshots below can be removed.
    @Test func diskChainsStayShort() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let snapshotter = Snapshotter(home: env.home, machines: env.store, diskMergeFanout: 2)
        let store = snapshotter.snapshots
        var current = fixture
        var taken: [SnapshotManifest] = []
        var sums = ""
        for round in 1 ... 3 {
            let machine = try await snapshotter.restore(current.id, name: "chain-\(round)")
            if let pid = await machine.record.pid { VMFixture.killAtExit(pid) }
            // 1 MiB per round: more than the clusters a small write copies up from the layers below.
            sums += try await machine.withAgent { agent in
                try await sh(agent, "echo \(round) >> /root/rounds.txt; head -c 1048576 /dev/urandom > /root/round-\(round); sync; sha256sum < /root/round-\(round)").out
            }
            current = try await snapshotter.take(machine, tag: nil, leaveRunning: false)
            taken.append(current)
            try await machine.remove(force: true)
        }
        let image = try await ImageStore(home: env.home).image(named: "bb").diskURL(in: env.home).path
        // Fanout 2 counts in binary: the fixture (tier 0, on the image) and round 1 merge into a
        // tier-1 layer on the image; round 2 sits on it; round 3 merges both into tier 2.
        #expect(taken[0].diskBase == image && taken[0].diskLevel == 1, "\(taken[0].diskBase) \(String(describing: taken[0].diskLevel))")
        #expect(taken[1].diskBase.hasSuffix("\(taken[0].id)/disk.qcow2") && taken[1].diskLevel == nil)
        #expect(taken[2].diskBase == image && taken[2].diskLevel == 2, "\(taken[2].diskBase)")
        #expect(taken[2].parent == taken[1].id, "the parent stays as history")
        // Nothing sits on the first two any more: they can go, and the last still restores whole.
        try await store.remove(taken[1].id, force: false, machines: try env.store.list())
        try await store.remove(taken[0].id, force: false, machines: try env.store.list())
        let back = try await snapshotter.restore(taken[2].id, name: "chain-back")
        if let pid = await back.record.pid { VMFixture.killAtExit(pid) }
        #expect(try await back.withAgent { agent in try await sh(agent, "echo 3 > /proc/sys/vm/drop_caches; cat /root/disk.txt /root/rounds.txt") }.out == "on-disk\n1\n2\n3\n")
        #expect(try await back.withAgent { agent in try await sh(agent, "echo 3 > /proc/sys/vm/drop_caches; for i in 1 2 3; do sha256sum < /root/round-$i; done") }.out == sums)
        try await back.remove(force: true)
        try await store.remove(taken[2].id, force: false, machines: try env.store.list())
    }

    /// Snapshots that leave the machine running (a session's turn snapshots) each hold what was
    /// written since the one before, layered on its disk, with it as parent: their size does not
    /// grow with their number, and each restores to exactly its own moment. With a fanout of 3,
    /// round 2 merges the fixture's layer and round 1's onto the image (tier 1), and round 5
    /// merges rounds 3 and 4 onto round 2's disk: a snapshot of this same machine, outside its
    /// backing chain, found through the overlay it froze.
    @Test func leaveRunningSnapshotsAreLayersOverTheLastOne() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let snapshotter = Snapshotter(home: env.home, machines: env.store, diskMergeFanout: 3)
        let store = snapshotter.snapshots
        let machine = try await snapshotter.restore(fixture.id, name: "layers")
        if let pid = await machine.record.pid { VMFixture.killAtExit(pid) }
        var taken: [SnapshotManifest] = []
        var sums: [String] = []
        for round in 1 ... 5 {
            sums.append(try await machine.withAgent { agent in
                try await sh(agent, "head -c 1048576 /dev/urandom > /root/layer-\(round); sync; sha256sum < /root/layer-\(round)").out
            })
            taken.append(try await snapshotter.take(machine, tag: nil, leaveRunning: true))
        }
        try await machine.remove(force: true)
        let image = try await ImageStore(home: env.home).image(named: "bb").diskURL(in: env.home).path
        #expect(taken[1].diskBase == image && taken[1].diskLevel == 1, "\(taken[1].diskBase)")
        #expect(taken[4].diskBase.hasSuffix("\(taken[1].id)/disk.qcow2") && taken[4].diskLevel == 1, "\(taken[4].diskBase)")
        #expect(taken[4].disk.allocated < 3_600_000, "rounds 3 to 5 merged: \(taken[4].disk.allocated) B")
        for round in [2, 3] {
            #expect(taken[round].parent == taken[round - 1].id)
            #expect(taken[round].diskBase.hasSuffix("\(taken[round - 1].id)/disk.qcow2"), "\(taken[round].diskBase)")
            // One MiB written per round, plus qcow2 metadata: not the rounds before it again.
            #expect(taken[round].disk.allocated < 1_400_000, "round \(round + 1): \(taken[round].disk.allocated) B of disk")
        }
        for round in 1 ..< 5 {
            #expect((taken[round].memoryAddedBytes ?? 0) < 1_700_000, "round \(round + 1): \(taken[round].memoryAddedBytes ?? 0) B of RAM")
            // Device state (~68 KB, ~13 KB compressed) is a delta of a few hundred bytes over the first's base.
            #expect(taken[round].stateBase != nil && taken[round].stateBase == taken[0].stateBase, "round \(round + 1): base \(String(describing: taken[round].stateBase))")
            #expect(taken[round].state.size < 2_000, "round \(round + 1): \(taken[round].state.size) B of device state")
            #expect(taken[round].stateInline?.count == Int(taken[round].state.size) && taken[round].state.allocated == 0,
                    "round \(round + 1): a small state delta is kept in the manifest, not in a file of its own")
        }
        for (index, snapshot) in taken.enumerated() {
            let back = try await snapshotter.restore(snapshot.id, name: "layers-back")
            if let pid = await back.record.pid { VMFixture.killAtExit(pid) }
            let listing = try await back.withAgent { agent in
                try await sh(agent, "echo 3 > /proc/sys/vm/drop_caches; for f in /root/layer-*; do sha256sum < $f; done").out
            }
            #expect(listing == sums[0 ... index].joined(), "snapshot \(index + 1) holds the files written before it and no later one")
            try await back.remove(force: true)
        }
        for snapshot in taken.reversed() { try await store.remove(snapshot.id, force: false, machines: try env.store.list()) }
    }

    /// A turn snapshot of a guest that wrote nothing to its disk since the one before shares
    /// that one's disk file (a hard link: nothing stored), and restores; the next snapshot layers
    /// over it, and the one whose file it shares can go.
    @Test func aSnapshotWithoutDiskWritesSharesItsParentsDisk() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let snapshotter = Snapshotter(home: env.home, machines: env.store)
        let store = snapshotter.snapshots
        let machine = try await snapshotter.restore(fixture.id, name: "share-disk")
        if let pid = await machine.record.pid { VMFixture.killAtExit(pid) }
        _ = try await machine.withAgent { agent in try await sh(agent, "echo first > /root/share-1; sync") }
        let first = try await snapshotter.take(machine, tag: nil, leaveRunning: true)
        let second = try await snapshotter.take(machine, tag: nil, leaveRunning: true)
        _ = try await machine.withAgent { agent in try await sh(agent, "echo third > /root/share-3; sync") }
        let third = try await snapshotter.take(machine, tag: nil, leaveRunning: true)
        try await machine.remove(force: true)

        func disk(_ manifest: SnapshotManifest) -> String { store.directory(manifest.id).appendingPathComponent(manifest.disk.file).path }
        func inode(_ path: String) -> UInt64 { var st = stat(); return stat(path, &st) == 0 ? UInt64(st.st_ino) : 0 }
        #expect(first.disk.allocated > 0)
        #expect(inode(disk(second)) == inode(disk(first)) && inode(disk(first)) != 0, "the second snapshot links the first's disk")
        #expect(second.disk.allocated == 0 && second.disk.digest == first.disk.digest)
        #expect(second.diskBase == first.diskBase && second.diskLevel == first.diskLevel)
        #expect(second.parent == first.id)
        #expect(third.diskBase == disk(second) && inode(disk(third)) != inode(disk(second)))
        try store.verify(second)

        // The first can go: nothing sits on its path, and its file lives on in the second.
        try await store.remove(first.id, force: false, machines: try env.store.list())
        for (snapshot, expected) in [(second, "first\n"), (third, "first\nthird\n")] {
            let back = try await snapshotter.restore(snapshot.id, name: "share-disk-back")
            if let pid = await back.record.pid { VMFixture.killAtExit(pid) }
            let out = try await back.withAgent { agent in try await sh(agent, "echo 3 > /proc/sys/vm/drop_caches; cat /root/share-*") }
            #expect(out.out == expected, "\(out)")
            try await back.remove(force: true)
        }
        try await store.remove(third.id, force: false, machines: try env.store.list())
        try await store.remove(second.id, force: false, machines: try env.store.list())
    }
}
