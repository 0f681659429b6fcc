import ChunkStore
import Foundation
@testable import Snapshots
import StasisCore
import Testing

/// Device state kept as a zstd delta over a base state in the chunk store (no VM: streams made up
/// to look like QEMU's, mostly repeated structure with a few counters that move).
@Suite("Device state deltas")
struct DeviceStateDeltaTests {
    /// ~68 KB like QEMU's device state: compressible (bytes of a 16-letter alphabet, no long
    /// repeats within), the same for every `seed` but for a byte in every 4 KiB.
    static func stream(seed: UInt8, size: Int = 68_000) -> [UInt8] {
        var state: UInt64 = 0x5EED
        return (0 ..< size).map { offset in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 60) &* 3 ^ (offset % 4096 == 100 ? seed : 0)
        }
    }

    /// A snapshot store in a fresh folder, and state files written into it.
    struct Scratch {
        let root = URL(fileURLWithPath: "/tmp/stasis-state-test-\(UInt64.random(in: 0 ... .max))")
        var store: SnapshotStore { SnapshotStore(home: StasisHome(root: root)) }

        init() throws { try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true) }

        func file(_ name: String, _ bytes: [UInt8]) throws -> URL {
            let url = root.appendingPathComponent(name)
            try Data(bytes).write(to: url)
            return url
        }

        func remove() { try? FileManager.default.removeItem(at: root) }

        /// A state file's bytes, as `storeDeviceState` left them.
        func bytes(_ url: URL) throws -> [UInt8] { [UInt8](try Data(contentsOf: url)) }
    }

    @Test func aStateThatChangedLittleCostsBytesOverItsParentsBase() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.store
        let first = try scratch.file("first", Self.stream(seed: 1))
        let second = try scratch.file("second", Self.stream(seed: 2))

        let base = try #require(try store.storeDeviceState(first, over: nil), "a first state becomes a base")
        #expect(try store.chunkStore().contains(base.hash))
        let firstSize = try Data(contentsOf: first).count
        #expect(firstSize < 100, "a state stored over itself is a few bytes: \(firstSize)")
        #expect(try store.deviceState(try scratch.bytes(first), over: base) == Self.stream(seed: 1))

        let kept = try store.storeDeviceState(second, over: base)
        #expect(kept == base, "a state that changed a few bytes stays over the parent's base")
        let secondSize = try Data(contentsOf: second).count
        #expect(secondSize < 500, "the delta is \(secondSize) bytes")
        #expect(try store.deviceState(try scratch.bytes(second), over: base) == Self.stream(seed: 2))
    }

    @Test func aStateUnlikeItsParentsBaseBecomesABase() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.store
        let first = try scratch.file("first", Self.stream(seed: 1))
        var rng = SystemRandomNumberGenerator()
        let noise = (0 ..< 68_000).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
        let other = try scratch.file("other", noise)
        let base = try #require(try store.storeDeviceState(first, over: nil))
        let newBase = try #require(try store.storeDeviceState(other, over: base))
        #expect(newBase != base)
        #expect(try store.deviceState(try scratch.bytes(other), over: newBase) == noise)
    }

    @Test func aWrongOrMissingBaseFailsAndNeverGivesAWrongState() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.store
        let first = try scratch.file("first", Self.stream(seed: 1))
        let second = try scratch.file("second", Self.stream(seed: 9, size: 50_000))
        let base = try #require(try store.storeDeviceState(first, over: nil))
        let otherBase = try #require(try store.storeDeviceState(second, over: nil))
        #expect(otherBase != base)
        // The frame's checksum covers what it decodes to: over another base it fails.
        #expect(throws: StasisError.self) { try store.deviceState(try scratch.bytes(first), over: otherBase) }
        _ = try store.chunkStore().remove(base.hash)
        let error = #expect(throws: StasisError.self) { try store.deviceState(try scratch.bytes(first), over: base) }
        #expect(error?.code == .notFound, "\(String(describing: error))")
    }

    @Test func aCompressedOrOversizedStreamIsLeftAsItIs() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.store
        let bytes = try Zstd().compress(Self.stream(seed: 3))
        let compressed = try scratch.file("compressed", bytes)
        #expect(try store.storeDeviceState(compressed, over: nil) == nil)
        #expect(try Data(contentsOf: compressed) == Data(bytes))
    }
}
