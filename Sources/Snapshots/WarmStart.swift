import Crypto
import Foundation
import Guest
import Images
import Machines
import StasisCore

/// Warm start: the first machine of an image (for one memory size, CPU count, network and
/// accelerator) is booted once and snapshotted right after boot, once the shell has run (`prewarm`);
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
        return (try await restore(snapshot, name: name, ports: spec.ports), made)
    }

    /// Restores `snapshot` as machine `name`; a machine that failed to come up is removed again,
    /// so a retry can use the name and the boot snapshot is not held by a dead machine.
    public func restore(_ snapshot: SnapshotManifest, name: String?, ports: [PortForward], autoRemove: Bool = false) async throws -> Machine {
        do {
            return try await snapshotter.restore(snapshot.id, name: name, ports: ports, autoRemove: autoRemove)
        } catch {
            let store = snapshotter.machines
            if let name, let record = try? store.find(name), record.restoredFrom == snapshot.id {
                try? await Machine(record: record, store: store).remove(force: true)
            }
            throw error
        }
    }

    /// The boot snapshot for machines of `spec` (ports aside): the newest one whose image, engine
    /// and kernel still match, or a new one. Two processes asking at once make it once.
    public func bootSnapshot(for spec: MachineSpec, bootTimeout: Duration) async throws -> (SnapshotManifest, made: Bool) {
        let home = snapshotter.snapshots.home
        let image = try await ImageStore(home: home).image(named: spec.image)
        let boot = try await BootArtifacts.resolve(home: home, image: spec.image)
        let tag = Self.tag(for: spec, image: image, boot: boot, accelerator: AcceleratorChoice.choose(spec.accelerator).kind)
        if let found = try await usable(tag) { return (found, false) }
        try snapshotter.snapshots.home.prepare()
        let lockURL = snapshotter.snapshots.home.snapshots.appendingPathComponent(".warm-\(tag.suffix(16)).lock")
        let lock = try await runBlocking { try FileLock.acquire(lockURL) }
        defer { withExtendedLifetime(lock) {} }
        if let found = try await usable(tag) { return (found, false) }
        return (try await make(spec, boot: boot, tag: tag, timeout: bootTimeout), true)
    }

    /// `boot:<image>:<digest of what a restore cannot change>`: memory, CPUs, network, host
    /// services, the accelerator this host would pick and the clock options it gives the kernel,
    /// the image's identity (a rebuilt image gets a new boot snapshot) and the initramfs, which
    /// holds the guest agent (a new stasis gets machines with its own agent).
    static func tag(for spec: MachineSpec, image: ImageRecord, boot: BootArtifacts, accelerator: AcceleratorChoice.Kind) -> String {
        var key = spec
        key.ports = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let specBytes = (try? encoder.encode(key)) ?? Data()
        let clock = QEMUCommandLine.clockOptions(accelerator).map { " " + $0 }.joined()
        let identity = Data("\(image.name) \(image.created.timeIntervalSince1970) \(image.diskBytes) \(boot.initramfs.lastPathComponent) \(boot.kernelVersion) \(accelerator.rawValue)\(clock)".utf8)
        let digest = SHA256.hash(data: specBytes + identity).prefix(8).map { String(format: "%02x", $0) }.joined()
        return "\(tagPrefix)\(spec.image):\(digest)"
    }

    /// The newest complete snapshot tagged `tag` that this host can restore, or nil.
    private func usable(_ tag: String) async throws -> SnapshotManifest? {
        guard let listed = try snapshotter.snapshots.list().last(where: { $0.tag == tag }) else { return nil }
        do {
            let found = try snapshotter.snapshots.manifest(listed.id)
            try await snapshotter.checkCompatible(found)
            try snapshotter.snapshots.verify(found)
            return found
        } catch {
            // A new QEMU or kernel, or a damaged snapshot: a fresh boot snapshot replaces it.
            return nil
        }
    }

    /// Runs `/bin/sh -c /bin/true` once, so the boot snapshot's page cache already holds what
    /// nearly every command loads (the shell, the dynamic loader, libc): every machine started
    /// from it then skips reading them from disk, and its first snapshot does not store them
    /// again (they were 0.8 MB of a no-change snapshot of the Debian image). An image without a
    /// shell is snapshotted as it is.
    public static func prewarm(_ machine: Machine) async {
        _ = try? await machine.withAgent(timeout: .seconds(30)) { agent in
            try await agent.run(ExecRequest(argv: ["/bin/sh", "-c", "/bin/true"], timeoutMilliseconds: 30_000))
        }
    }

    /// Boots a machine of `spec` with no published ports, snapshots it as soon as its agent
    /// answers (the machine stops), and removes the machine.
    private func make(_ spec: MachineSpec, boot: BootArtifacts, tag: String, timeout: Duration) async throws -> SnapshotManifest {
        var source = spec
        source.ports = []
        let store = snapshotter.machines
        // `warm-<digest>-<random>`: fits the name limit whatever the image is called.
        let name = "warm-\(tag.suffix(16))-\(String(format: "%04x", UInt16.random(in: 0 ... .max)))"
        let machine = Machine(record: try store.create(name: name, spec: source, autoRemove: false), store: store)
        do {
            _ = try await machine.boot(boot, timeout: timeout)
            await Self.prewarm(machine)
            let manifest = try await snapshotter.take(machine, tag: tag, leaveRunning: false)
            try await machine.remove(force: true)
            return manifest
        } catch {
            try? await machine.remove(force: true)
            throw error
        }
    }
}
