import Foundation
import Guest

/// Builds the QEMU microvm command line for a machine. The device list and its order are part of
/// a snapshot's identity: restore must build exactly the same one.
public struct QEMUCommandLine: Sendable {
    public var record: MachineRecord
    public var paths: MachinePaths
    public var boot: BootArtifacts
    public var accelerator: AcceleratorChoice
    public var tscKHz: Int?
    /// Start waiting for a migration stream instead of booting (`-incoming defer`).
    public var incoming: Bool

    public init(record: MachineRecord, paths: MachinePaths, boot: BootArtifacts, accelerator: AcceleratorChoice, tscKHz: Int?, incoming: Bool = false) {
        self.record = record
        self.paths = paths
        self.boot = boot
        self.accelerator = accelerator
        self.tscKHz = tscKHz
        self.incoming = incoming
    }

    /// The guest's address on QEMU's user network.
    public static let guestAddress = "10.0.2.15/24"
    public static let gatewayAddress = "10.0.2.2"
    public static let dnsAddress = "10.0.2.3"

    /// The kernel command line: console on the serial port, and the agent's settings.
    public var kernelCommandLine: String {
        var words = ["console=ttyS0", "quiet", "panic=-1", "reboot=t", "stasis.hostname=\(record.name)"]
        if accelerator.kind == .tcg, let tscKHz { words.append("tsc_early_khz=\(tscKHz)") }
        words += Self.clockOptions(accelerator.kind)
        if record.spec.zeroFreedMemory { words.append("init_on_free=1") }
        if record.spec.deferWriteback { words.append("stasis.writeback=deferred") }
        switch record.spec.network {
        case .none: words.append("stasis.net=none")
        case .isolated: words.append("stasis.net=\(Self.guestAddress),\(Self.gatewayAddress)")
        case .outbound: words.append("stasis.net=\(Self.guestAddress),\(Self.gatewayAddress),\(Self.dnsAddress)")
        }
        return words.joined(separator: " ")
    }

    /// Kernel options for the guest's clock, which depend on the accelerator alone.
    ///
    /// Under TCG the boot-time clocksource watchdog compares the TSC against jiffies, whose ticks
    /// arrive late while QEMU translates code, blames the TSC and falls back to jiffies. A guest
    /// clocked by jiffies loses every tick the host is too busy to deliver (seconds on a loaded
    /// host) and ticks 250 times a second even when idle. TCG's TSC follows the host's, so it is
    /// declared reliable. Under KVM the guest uses kvm-clock.
    public static func clockOptions(_ kind: AcceleratorChoice.Kind) -> [String] {
        kind == .tcg ? ["tsc=reliable"] : []
    }

    /// A stable MAC address derived from the machine id.
    public var macAddress: String {
        let hex = Array(record.id.prefix(6))
        let pairs = stride(from: 0, to: 6, by: 2).map { String(hex[$0 ..< min($0 + 2, hex.count)]) }
        return "52:54:00:" + pairs.joined(separator: ":")
    }

    /// QEMU's `-netdev user` value, or nil for no NIC.
    public var netdev: String? {
        guard record.spec.network != .none else { return nil }
        var parts = ["user", "id=n0"]
        if record.spec.network == .isolated { parts.append("restrict=on") }
        for p in record.spec.ports {
            parts.append("hostfwd=tcp:\(p.hostAddress):\(p.hostPort)-:\(p.guestPort)")
        }
        // One connector process per connection: a `-tcp:` target would serve only the first one.
        for s in record.spec.allowedHosts {
            parts.append("guestfwd=tcp:\(s.guestAddress):\(s.port)-cmd:socat - TCP:\(s.hostAddress):\(s.port)")
        }
        return parts.joined(separator: ",")
    }

    /// The machine and its devices, in order, without paths: what a snapshot's device state
    /// depends on. Restore refuses a snapshot whose layout differs from the one it would build.
    public var deviceLayout: [String] {
        var layout = ["microvm", "cpu=\(accelerator.kind == .kvm ? "host" : "max")", "memory=\(record.spec.memoryMiB)M",
                      "smp=\(record.spec.cpus)", "virtio-serial-device"]
        layout += AgentProtocol.portNames.map { "virtserialport:\($0)" }
        layout += ["virtio-blk-device", "virtio-rng-device"]
        if record.spec.network != .none { layout.append("virtio-net-device") }
        return layout
    }

    /// Arguments after the program name.
    public var arguments: [String] {
        let accel = accelerator.kind == .kvm ? "kvm" : "tcg,thread=multi"
        var a = [
            "-name", "stasis-\(record.id),process=stasis-\(record.id)",
            "-M", "microvm", "-accel", accel, "-cpu", accelerator.kind == .kvm ? "host" : "max",
            "-m", "\(record.spec.memoryMiB)M", "-smp", "\(record.spec.cpus)",
        ]
        // A restored guest's kernel is already in its RAM.
        if !incoming {
            a += ["-kernel", boot.kernel.path, "-initrd", boot.initramfs.path, "-append", kernelCommandLine]
        }
        a += [
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-chardev", "file,id=serial0,path=\(paths.console.path),append=on", "-serial", "chardev:serial0",
            "-qmp", "unix:\(paths.qmpSocket.path),server=on,wait=off",
            // Guest RAM lives in a file so that a snapshot need not copy it (x-ignore-shared); a
            // fork maps its snapshot's file privately, copy-on-write.
            "-object", "memory-backend-file,id=mem,size=\(record.spec.memoryMiB)M,mem-path=\(paths.memory(of: record).path),share=\(record.memoryShared == false ? "off" : "on")",
            "-machine", "memory-backend=mem",
            "-device", "virtio-serial-device,id=vser0",
        ]
        for (i, name) in AgentProtocol.portNames.enumerated() {
            a += ["-chardev", "socket,id=\(name),path=\(paths.agentSocket(i).path),server=on,wait=off",
                  "-device", "virtserialport,bus=vser0.0,chardev=\(name),name=\(name),id=port\(i)"]
        }
        a += ["-drive", "id=d0,if=none,file=\(paths.disk(of: record).path),format=qcow2,cache=writeback,discard=unmap",
              "-device", "virtio-blk-device,drive=d0,id=blk0",
              "-object", "rng-random,id=rng0,filename=/dev/urandom",
              "-device", "virtio-rng-device,rng=rng0,id=rng0dev"]
        if let netdev {
            a += ["-netdev", netdev, "-device", "virtio-net-device,netdev=n0,id=net0,mac=\(macAddress)"]
        }
        if incoming { a += ["-incoming", "defer"] }
        a += ["-daemonize", "-pidfile", paths.pidFile.path]
        return a
    }
}
