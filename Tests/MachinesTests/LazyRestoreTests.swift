import Foundation
import Guest
import LazyMemory
@testable import Machines
import Snapshots
import StasisCore
import Testing

/// `restore --lazy`: RAM served through FUSE by stasis-memfs, a frame at a time.
@Suite("Lazy restore", .timeLimit(.minutes(10)), .enabled(if: MemoryServer.isAvailable, "needs /dev/fuse and stasis-memfs"))
struct LazyRestoreTests {
    @Test func aLazyMachineIsTheSnapshotAndReadsOnlyWhatItTouches() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let frames = try #require(fixture.memoryFrames)
        let machine = try await Snapshotter(home: env.home, machines: env.store).restore(fixture.id, name: "lazy-one", lazily: true)
        if let pid = await machine.record.pid { VMFixture.killAtExit(pid) }
        let record = await machine.record
        let paths = MachinePaths(home: env.home, id: record.id)
        #expect(record.memoryShared == false)
        #expect(record.memoryFile == paths.memoryMount.appendingPathComponent(MemoryFileSystem.fileName).path)
        #expect(MountPoint.isMounted(paths.memoryMount))

        // Memory, processes and disk as the snapshot left them.
        try await machine.withAgent { agent in
            let ram = try await sh(agent, "cat /tmp/ram.txt").out
            let disk = try await sh(agent, "cat /root/disk.txt").out
            #expect(ram == "in-ram\n")
            #expect(disk == "on-disk\n")
            // The shell loop, alive, writes its variable again.
            let beat = try await sh(agent, "rm /tmp/heartbeat; for i in $(seq 100); do [ -s /tmp/heartbeat ] && break; sleep 0.1; done; cat /tmp/heartbeat")
            #expect(beat.out == "kept-in-memory\n")
        }

        // Only the parts of RAM the guest touched were read. The kernel reads a privately mapped
        // file around each fault in 2-4 MiB windows (QEMU asks for huge pages), so "parts" are
        // those windows: measured 40 % of this guest's RAM, where an eager restore writes all of it.
        let file = paths.memoryMount.appendingPathComponent(MemoryFileSystem.fileName)
        let cached = try Self.cachedPages(file)
        let allPages = frames.totalSize / 4096
        #expect(cached > 0 && cached < allPages * 3 / 4, "\(cached) pages read of \(allPages)")
        print("lazy restore: \(cached) of \(allPages) pages read")

        try await machine.remove(force: true)
        #expect(!MountPoint.isMounted(paths.memoryMount), "removing the machine leaves no mount")
    }

    @Test func aLazyMachineCanBeSnapshottedAndRestoredAgain() async throws {
        let env = try await VMFixture.shared.env()
        let fixture = try await SnapshotFixture.shared.manifest()
        let snapshotter = Snapshotter(home: env.home, machines: env.store)
        let lazy = try await snapshotter.restore(fixture.id, name: "lazy-again", lazily: true)
        if let pid = await lazy.record.pid { VMFixture.killAtExit(pid) }
        try await lazy.withAgent { agent in _ = try await sh(agent, "echo after-lazy > /tmp/later.txt") }
        let next = try await snapshotter.take(lazy, tag: nil, leaveRunning: false)
        let back = try await snapshotter.restore(next.id, name: "lazy-again-back")
        if let pid = await back.record.pid { VMFixture.killAtExit(pid) }
        try await back.withAgent { agent in
            let both = try await sh(agent, "cat /tmp/ram.txt /tmp/later.txt").out
            #expect(both == "in-ram\nafter-lazy\n")
        }
        try await back.remove(force: true)
        try await lazy.remove(force: true)
        try await SnapshotStore(home: env.home).remove(next.id, force: false, machines: try env.store.list())
    }

    /// How many pages of `file` are in the page cache (mincore over a read-only mapping).
    static func cachedPages(_ file: URL) throws -> Int {
        let fd = open(file.path, O_RDONLY)
        guard fd >= 0 else { throw StasisError(.ioFailure, "cannot open \(file.path)", cause: Errno()) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw StasisError(.ioFailure, "cannot stat \(file.path)", cause: Errno()) }
        let size = Int(info.st_size)
        guard let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw StasisError(.ioFailure, "cannot map \(file.path)", cause: Errno())
        }
        defer { munmap(map, size) }
        var vector = [UInt8](repeating: 0, count: (size + 4095) / 4096)
        guard mincore(map, size, &vector) == 0 else { throw StasisError(.ioFailure, "mincore failed", cause: Errno()) }
        return vector.reduce(0) { $0 + Int($1 & 1) }
    }
}
