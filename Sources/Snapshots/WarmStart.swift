import Crypto
import Foundation
import Images
import Machines
import StasisCore

/// Warm start: the first machine of an image (for one memory size, CPU count, network and
/// accelerator) is booted once and snapshotted right after boot, before anything runs in it;
/// every later machine of that kind is restored from that boot snapshot instead of booting, so
/// it answers in restore time and shares the snapshot's RAM frames. A restored machine gets its
/// own name, hostname, clock, RNG and disk overlay, like a booted one.
public struct WarmStart: Sendable {
    public let snapshotter: Snapshotter

    public init(snapshotter: Snapshotter) { self.snapshotter = snapshotter }

    /// The tag every boot snapshot carries; `stasis snapshots` shows it.
    public static let tagPrefix = "boot:"

    /// Whether machines of `spec` start warm. Not with `--allow-host` services: their forwarding
    /// is part of the snapshot's network state, and each set would need its own boot snapshot.
    public static func applies(to spec: MachineSpec) -> Bool { spec.allowedHosts.isEmpty }

    /// A running machine of `spec`, restored from the image's boot snapshot (made first if there
    /// is none). `made` says whether this call had to boot one to make it.
    public func start(_ spec: MachineSpec, name: String?, bootTimeout: Duration) async throws -> (machine: Machine, madeBootSnapshot: Bool) {
        let (snapshot, made) = try await bootSnapshot(for: spec, bootTimeout: bootTimeout)
        let machine = try await snapshotter.restore(snapshot.id, name: name, ports: spec.ports)
        return (machine, made)
    }

    /// The boot snapshot for machines of `spec` (ports aside): the newest one whose image, engine
    /// and kernel still match, or a new one. Two processes asking at once make it once.
    public func bootSnapshot(for spec: MachineSpec, bootTimeout: Duration) async throws -> (SnapshotManifest, made: Bool) {
        let image = try await ImageStore(home: snapshotter.snapshots.home).image(named: spec.image)
        let tag = Self.tag(for: spec, image: image)
        if let found = try await usable(tag) { return (found, false) }
        try snapshotter.snapshots.home.prepare()
        let lockURL = snapshotter.snapshots.home.snapshots.appendingPathComponent(".warm-\(tag.suffix(16)).lock")
        let lock = try await runBlocking { try FileLock.acquire(lockURL) }
        defer { withExtendedLifetime(lock) {} }
        if let found = try await usable(tag) { return (found, false) }
        return (try await make(spec, tag: tag, timeout: bootTimeout), true)
    }

    /// `boot:<image>:<digest of what a restore cannot change>`: memory, CPUs, network, host
    /// services, accelerator preference, and the image's identity (a rebuilt image gets a new
    /// boot snapshot).
    static func tag(for spec: MachineSpec, image: ImageRecord) -> String {
        var key = spec
        key.ports = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let specBytes = (try? encoder.encode(key)) ?? Data()
        let identity = Data("\(image.name) \(image.created.timeIntervalSince1970) \(image.diskBytes)".utf8)
        let digest = SHA256.hash(data: specBytes + identity).prefix(8).map { String(format: "%02x", $0) }.joined()
        return "\(tagPrefix)\(spec.image):\(digest)"
    }

    /// The newest complete snapshot tagged `tag` that this host can restore, or nil.
    private func usable(_ tag: String) async throws -> SnapshotManifest? {
        guard let found = try snapshotter.snapshots.list().last(where: { $0.tag == tag }) else { return nil }
        do {
            try await snapshotter.checkCompatible(found)
            try snapshotter.snapshots.verify(found)
            return found
        } catch {
            // A new QEMU or kernel, or a damaged snapshot: a fresh boot snapshot replaces it.
            return nil
        }
    }

    /// Boots a machine of `spec` with no published ports, snapshots it as soon as its agent
    /// answers (the machine stops), and removes the machine.
    private func make(_ spec: MachineSpec, tag: String, timeout: Duration) async throws -> SnapshotManifest {
        var source = spec
        source.ports = []
        let store = snapshotter.machines
        let boot = try await BootArtifacts.resolve(home: store.home, image: spec.image)
        let suffix = String(format: "%04x", UInt16.random(in: 0 ... .max))
        let machine = Machine(record: try store.create(name: "warm-\(spec.image)-\(suffix)", spec: source, autoRemove: false), store: store)
        do {
            _ = try await machine.boot(boot, timeout: timeout)
            let manifest = try await snapshotter.take(machine, tag: tag, leaveRunning: false)
            try await machine.remove(force: true)
            return manifest
        } catch {
            try? await machine.remove(force: true)
            throw error
        }
    }
}
