import Foundation
@testable import Machines
import Snapshots
import StasisCore
import Testing

/// `stasis snapshot export` / `import`: one file in the zstd seekable format that the zstd tool
/// reads and another home restores.
@Suite("Snapshot archives", .timeLimit(.minutes(10)))
struct SnapshotArchiveTests {
    @Test func anExportReadsWithZstdAndRestoresInAnEmptyHome() async throws {
        let env = try await VMFixture.shared.env()
        let manifest = try await SnapshotFixture.shared.manifest()
        let file = env.home.root.appendingPathComponent("export-\(UUID().uuidString).stasis.zst")
        defer { try? FileManager.default.removeItem(at: file) }
        let summary = try await SnapshotArchive(home: env.home).export(manifest.id, to: file)
        let frames = try #require(manifest.memoryFrames)
        #expect(summary.archiveBytes < UInt64(frames.totalSize / 2), "zero frames cost almost nothing")

        // The standard tool reads it: the frames, the seek table, the tar inside, the raw memory.
        try await HostTool.run("zstd", ["-q", "-t", file.path])
        let listing = try await HostTool.run("sh", ["-c", "zstd -q -d -c '\(file.path)' | tar -t"]).standardOutput
        #expect(listing.split(separator: "\n") == ["manifest.json", "state", "memory", "disk.qcow2"])
        let raw = env.home.root.appendingPathComponent("raw-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: raw) }
        try SnapshotStore(home: env.home).materializeMemory(manifest, to: raw)
        let memory = raw.path
        let sums = try await HostTool.run("sh", ["-c", "zstd -q -d -c '\(file.path)' | tar -xO memory | sha256sum; sha256sum < '\(memory)'"]).standardOutput
        let lines = sums.split(separator: "\n").map { $0.prefix(64) }
        #expect(lines.count == 2 && lines[0] == lines[1], "the memory comes out byte for byte")

        // Another home, with the same image but none of this one's snapshots, imports and restores it.
        let other = try await VMFixture.shared.secondaryHome()
        let imported = try await SnapshotArchive(home: other).importArchive(from: file, tag: "moved")
        #expect(imported.id == manifest.id)
        #expect(imported.parent == nil)
        #expect(imported.memoryFrames?.digest == frames.digest, "the same RAM, frame for frame, in the other home's chunk store")
        #expect(imported.memory == nil)
        let restored = try await Snapshotter(home: other).restore("moved", name: "moved")
        if let pid = await restored.record.pid { VMFixture.killAtExit(pid) }
        let seen = try await restored.withAgent { agent in try await sh(agent, "cat /root/disk.txt /tmp/ram.txt") }
        #expect(seen.out == "on-disk\nin-ram\n")
        try await restored.remove(force: true)

        // Importing it twice is refused; a damaged archive is refused and leaves nothing behind.
        await #expect(throws: StasisError.self) { try await SnapshotArchive(home: other).importArchive(from: file) }
        let damaged = other.root.appendingPathComponent("damaged.stasis.zst")
        var bytes = try Data(contentsOf: file)
        bytes[bytes.count / 3] ^= 0xFF
        try bytes.write(to: damaged)
        let third = try await VMFixture.shared.secondaryHome()
        let error = await #expect(throws: StasisError.self) { try await SnapshotArchive(home: third).importArchive(from: damaged) }
        #expect(error?.code == .corrupted)
        #expect(try SnapshotStore(home: third).list().isEmpty)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: third.snapshots.path).filter { $0.hasPrefix(".staging") }
        #expect(leftovers.isEmpty)
    }
}
