import Foundation
import Machines
import Snapshots
import StasisCore

/// The machine half of the Stasis road: a small machine (bench-bb) that runs idle while the
/// session's turns are appended, is suspended (a stop-mode snapshot) once, and is restored from
/// that snapshot several times. Nothing in it depends on the number of turns: the benchmark's
/// tool runs in-process on both roads, so the guest does the same (nothing) whatever N is.
enum SnapshotSide {
    /// The suspend: `Snapshotter.take(leaveRunning: false)`.
    struct Take: Encodable {
        /// `take` called → committed, ms.
        var wallMs: Double
        /// The guest's pause (`stop` → `quit`), ms.
        var pausedMs: Double
        /// CPU of this process and of the child processes it waited for (qemu-img, qemu --version), ms.
        var benchCPUMs: Double
        var childrenCPUMs: Double
        /// QEMU's CPU up to just before the snapshot, for scale; the snapshot's own share cannot be
        /// read, because QEMU exits at the end of a stop-mode snapshot.
        var qemuCPUBeforeMs: Double?
        /// Bytes allocated by the snapshot's parts (RAM file, device state, disk layer).
        var allocatedBytes: UInt64
    }

    /// One `Snapshotter.restore`.
    struct Restore: Encodable {
        /// `restore` called → returned (machine running, clock/RNG/hostname/generation sent), ms.
        var returnedMs: Double
        /// … → the first `exec true` answered, ms.
        var answeredMs: Double
        var benchCPUMs: Double
        var childrenCPUMs: Double
        /// The restored QEMU's CPU until the exec answered, ms.
        var qemuCPUMs: Double?
    }

    /// The machine's QEMU CPU time so far, ms.
    static func qemuCPU(_ machine: Machine) async -> Double? {
        guard let pid = try? await machine.refresh().pid else { return nil }
        return CPUTime.of(pid: pid)?.ms
    }

    static func take(_ machine: Machine, snapshotter: Snapshotter) async throws -> (SnapshotManifest, Take) {
        let qemu = await qemuCPU(machine)
        let usage0 = CPUTime.processUsage()
        let t0 = ContinuousClock.now
        let manifest = try await snapshotter.take(machine, tag: nil, leaveRunning: false)
        let wall = (ContinuousClock.now - t0).milliseconds
        let usage1 = CPUTime.processUsage()
        let take = Take(wallMs: wall, pausedMs: manifest.pausedMilliseconds, benchCPUMs: usage1.own - usage0.own,
                        childrenCPUMs: usage1.children - usage0.children, qemuCPUBeforeMs: qemu,
                        allocatedBytes: manifest.parts.reduce(0) { $0 + $1.allocated })
        return (manifest, take)
    }

    static func restore(_ id: String, name: String, snapshotter: Snapshotter) async throws -> Restore {
        let usage0 = CPUTime.processUsage()
        let t0 = ContinuousClock.now
        let machine = try await snapshotter.restore(id, name: name)
        let returned = (ContinuousClock.now - t0).milliseconds
        do {
            try await StasisGuest.execTrue(machine)
        } catch {
            try? await machine.remove(force: true)
            throw error
        }
        let answered = (ContinuousClock.now - t0).milliseconds
        let usage1 = CPUTime.processUsage()
        let qemu = await qemuCPU(machine)
        try await machine.remove(force: true)
        return Restore(returnedMs: returned, answeredMs: answered, benchCPUMs: usage1.own - usage0.own,
                       childrenCPUMs: usage1.children - usage0.children, qemuCPUMs: qemu)
    }
}
