import CStasis
import Glibc

/// Settings the host passes on the kernel command line (`stasis.NAME=VALUE`).
struct BootOptions {
    var hostname = "stasis"
    var rootDevice = "/dev/vda"
    var rootFSType = "ext4"
    /// `ADDRESS/PREFIX,GATEWAY[,DNS]`, or nil for no network setup.
    var network: String?
    /// `writeback=deferred`: keep written data in the page cache until synced or an hour old.
    var deferWriteback = false

    init(commandLine: String) {
        for word in commandLine.split(separator: " ") {
            guard word.hasPrefix("stasis."), let eq = word.firstIndex(of: "=") else { continue }
            let key = word[word.index(word.startIndex, offsetBy: 7) ..< eq]
            let value = String(word[word.index(after: eq)...])
            switch key {
            case "hostname": hostname = value
            case "root": rootDevice = value
            case "rootfstype": rootFSType = value
            case "net": network = value == "none" ? nil : value
            case "writeback": deferWriteback = value == "deferred"
            default: break
            }
        }
    }
}

/// Brings the guest from an initramfs to the image's root file system, ready to run commands.
enum Boot {
    static func run() -> BootOptions {
        mountEarly()
        let options = BootOptions(commandLine: POSIX.readText("/proc/cmdline") ?? "")
        loadModules()
        mountRoot(options)
        if options.deferWriteback { deferWriteback(of: options.rootDevice) }
        setHostname(options.hostname)
        if let net = options.network, let config = parseNetwork(net) {
            if let err = Network.configure(config) { log("network: \(err)") }
        }
        return options
    }

    private static func mount(_ source: String, _ target: String, _ type: String, _ flags: UInt = 0, _ data: String? = nil) {
        POSIX.mkdir(target)
        let rc = data.map { cshim_mount(source, target, type, flags, $0) } ?? cshim_mount(source, target, type, flags, nil)
        if rc != 0 && POSIX.errno != EBUSY {
            log("mount \(type) on \(target): \(POSIX.describe(POSIX.errno))")
        }
    }

    /// Dirty pages are written back once an hour old instead of after 30 s. The disk's share of
    /// the dirty limits is also fixed at 90 %: the kernel otherwise sizes it by the disk's recent
    /// writes, which right after boot (and in every guest restored from a boot snapshot) is so
    /// small that a few hundred KiB already start background writeback.
    private static func deferWriteback(of device: String) {
        let settings = [("/proc/sys/vm/dirty_expire_centisecs", "360000"),
                        ("/sys/block/\(device.split(separator: "/").last ?? "vda")/bdi/min_ratio", "90")]
        for (path, value) in settings where POSIX.writeFile(path, Array("\(value)\n".utf8), mode: 0o644, append: false) != 0 {
            log("cannot write \(value) to \(path): writeback stays as the kernel set it")
        }
    }

    private static func mountEarly() {
        let nosuid = UInt(MS_NOSUID), nodev = UInt(MS_NODEV), noexec = UInt(MS_NOEXEC)
        mount("proc", "/proc", "proc", nosuid | nodev | noexec)
        mount("sysfs", "/sys", "sysfs", nosuid | nodev | noexec)
        mount("devtmpfs", "/dev", "devtmpfs", nosuid, "mode=0755")
        mount("tmpfs", "/run", "tmpfs", nosuid | nodev, "mode=0755")
    }

    /// Loads the modules the host listed, in its order (taken from each module's depends=).
    private static func loadModules() {
        guard let list = POSIX.readText("/etc/stasis/modules") else { return }
        for name in list.split(separator: "\n") where !name.isEmpty {
            let path = "/lib/modules/\(name)"
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { log("module \(name): \(POSIX.describe(POSIX.errno))"); continue }
            if cshim_finit_module(fd) != 0 && POSIX.errno != EEXIST {
                log("module \(name): \(POSIX.describe(POSIX.errno))")
            }
            close(fd)
            unlink(path)
        }
    }

    private static func mountRoot(_ options: BootOptions) {
        // The disk appears asynchronously after virtio_blk loads.
        var waited = 0
        while !POSIX.exists(options.rootDevice) && waited < 5000 {
            usleep(2000)
            waited += 2
        }
        guard POSIX.exists(options.rootDevice) else {
            log("no root disk at \(options.rootDevice); staying in the initramfs")
            return
        }
        POSIX.mkdir("/newroot")
        guard cshim_mount(options.rootDevice, "/newroot", options.rootFSType, 0, nil) == 0 else {
            log("mount root \(options.rootDevice): \(POSIX.describe(POSIX.errno)); staying in the initramfs")
            return
        }
        for dir in ["/dev", "/proc", "/sys", "/run"] {
            POSIX.mkdir("/newroot" + dir)
            if cshim_mount(dir, "/newroot" + dir, nil, UInt(MS_MOVE), nil) != 0 {
                log("move \(dir): \(POSIX.describe(POSIX.errno))")
            }
        }
        if cshim_switch_root("/newroot") != 0 {
            log("switch_root: \(POSIX.describe(POSIX.errno))")
            return
        }
        let nosuid = UInt(MS_NOSUID), nodev = UInt(MS_NODEV), noexec = UInt(MS_NOEXEC)
        mount("devpts", "/dev/pts", "devpts", nosuid | noexec, "gid=5,mode=620,ptmxmode=666")
        mount("tmpfs", "/dev/shm", "tmpfs", nosuid | nodev)
        mount("tmpfs", "/tmp", "tmpfs", nosuid | nodev, "mode=1777")
        POSIX.mkdir("/run/stasis")
    }

    static func setHostname(_ name: String) {
        let bytes = Array(name.utf8)
        _ = bytes.withUnsafeBufferPointer { buf in
            buf.withMemoryRebound(to: CChar.self) { cshim_sethostname($0.baseAddress, $0.count) }
        }
    }

    /// `10.0.2.15/24,10.0.2.2[,10.0.2.3]`
    static func parseNetwork(_ text: String) -> NetworkSettings? {
        let parts = text.split(separator: ",").map(String.init)
        guard parts.count >= 2 else { return nil }
        let cidr = parts[0].split(separator: "/")
        guard cidr.count == 2, let prefix = UInt8(cidr[1]) else { return nil }
        return NetworkSettings(interface: "eth0", address: String(cidr[0]), prefixLength: prefix,
                               gateway: parts[1], nameservers: Array(parts.dropFirst(2)))
    }
}

/// IPv4 settings as the agent applies them.
struct NetworkSettings {
    var interface: String
    var address: String
    var prefixLength: UInt8
    var gateway: String
    var nameservers: [String]
}

enum Network {
    /// Applies static settings; returns an error text or nil.
    static func configure(_ s: NetworkSettings) -> String? {
        guard let addr = POSIX.parseIPv4(s.address), let gw = POSIX.parseIPv4(s.gateway), s.prefixLength <= 32 else {
            return "invalid address \(s.address)/\(s.prefixLength) via \(s.gateway)"
        }
        let mask: UInt32 = s.prefixLength == 0 ? 0 : ~UInt32(0) << (32 - UInt32(s.prefixLength))
        if cshim_if_up("lo") != 0 { return "lo up: \(POSIX.describe(POSIX.errno))" }
        // The NIC shows up shortly after virtio_net loads.
        var waited = 0
        while !POSIX.exists("/sys/class/net/\(s.interface)") && waited < 2000 {
            usleep(2000)
            waited += 2
        }
        if cshim_if_set_ipv4(s.interface, addr, mask) != 0 { return "\(s.interface) address: \(POSIX.describe(POSIX.errno))" }
        if cshim_if_up(s.interface) != 0 { return "\(s.interface) up: \(POSIX.describe(POSIX.errno))" }
        if cshim_route_add_default(gw) != 0 { return "default route: \(POSIX.describe(POSIX.errno))" }
        if !s.nameservers.isEmpty {
            let text = s.nameservers.map { "nameserver \($0)\n" }.joined()
            _ = POSIX.writeFile("/etc/resolv.conf", Array(text.utf8), mode: 0o644, append: false)
        }
        return nil
    }
}
