import Foundation
import Guest
@testable import Machines
import StasisCore
import Testing

/// Machines tests that boot nothing. Run with `--filter MachineUnitTests`.
enum MachineUnitTests {}

/// Helpers for MachineUnitTests (VMFixture.swift holds the ones for VM tests).
enum MachineUnitSupport {
    /// A fresh folder under /tmp (kept short: agent socket paths must stay under 104 bytes).
    static func temporaryFolder() throws -> URL {
        let url = URL(fileURLWithPath: "/tmp/smu-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// The StasisError a throwing call raised, or nil (recording an issue) if it raised none.
    static func stasisError(_ sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> StasisError? {
        #expect(throws: StasisError.self, sourceLocation: sourceLocation) { try body() }
    }

    /// Every value following `flag` in an argument list.
    static func values(of flag: String, in arguments: [String]) -> [String] {
        zip(arguments, arguments.dropFirst()).filter { $0.0 == flag }.map(\.1)
    }
}

// MARK: - MachineSpec, PortForward, HostService

extension MachineUnitTests {
    @Suite struct MachineSpecParsingTests {
        @Test(arguments: [
            ("512M", 512), ("512m", 512), ("512MB", 512), ("512MiB", 512), ("2G", 2048), ("2g", 2048), ("2GB", 2048),
            ("2GiB", 2048), ("1024", 1024), ("64", 64), ("64M", 64), (" 256M ", 256), ("1024G", 1 << 20),
        ])
        func parseMemoryAccepts(text: String, mib: Int) throws {
            #expect(try MachineSpec.parseMemory(text) == mib)
        }

        @Test(arguments: ["abc", "0", "0M", "12X", "", "M", "G", "-512M", "+512", "512K", "1.5", "5 12", "0x200", "٥١٢"])
        func parseMemoryRefusesMalformedSizes(text: String) throws {
            let error = MachineUnitSupport.stasisError { _ = try MachineSpec.parseMemory(text) }
            #expect(error?.code == .invalidArgument)
            let message = error?.message ?? ""
            #expect(message.contains("'\(text)'"), "names the input: \(message)")
            #expect(message.contains("512M") && message.contains("2G"), "shows the forms: \(message)")
        }

        @Test(arguments: ["10", "63", "63M", "1025G", "2000000"])
        func parseMemoryRefusesSizesOutOfRange(text: String) throws {
            let error = MachineUnitSupport.stasisError { _ = try MachineSpec.parseMemory(text) }
            #expect(error?.code == .invalidArgument)
            let message = error?.message ?? ""
            #expect(message.contains(text) && message.contains("64M") && message.contains("1024G"), "\(message)")
        }

        @Test(arguments: ["12XG", "1.5G", "1M2G", "2MG"])
        func parseMemoryRefusesJunkBeforeTheUnit(text: String) {
            let error = MachineUnitSupport.stasisError { _ = try MachineSpec.parseMemory(text) }
            #expect(error?.code == .invalidArgument)
        }

        @Test func parseMemoryOfAHugeNumberDoesNotCrash() async {
            await #expect(processExitsWith: .success) {
                _ = try? MachineSpec.parseMemory("9999999999999999G")
            }
        }

        @Test(arguments: [
            ("80", "127.0.0.1", 80, 80),
            ("8080:80", "127.0.0.1", 8080, 80),
            ("127.0.0.1:8080:80", "127.0.0.1", 8080, 80),
            ("0.0.0.0:3000:3000", "0.0.0.0", 3000, 3000),
            (":8080:80", "127.0.0.1", 8080, 80),
            ("8080:80/tcp", "127.0.0.1", 8080, 80),
            ("65535:1", "127.0.0.1", 65535, 1),
        ] as [(String, String, UInt16, UInt16)])
        func portForwardParses(text: String, address: String, host: UInt16, guest: UInt16) throws {
            let p = try PortForward(parsing: text)
            #expect(p == PortForward(hostAddress: address, hostPort: host, guestPort: guest))
        }

        @Test func portForwardDescription() throws {
            #expect(try PortForward(parsing: "8080:80").description == "127.0.0.1:8080->80/tcp")
        }

        @Test(arguments: ["", "0", "abc", "65536", "8080:", ":80", "8080:0", "0:80", "-1:80", "1:2:3:4", "8080:80/udp", "80 :80", "a:b:c"])
        func portForwardRefuses(text: String) throws {
            let error = MachineUnitSupport.stasisError { _ = try PortForward(parsing: text) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("8080:80") == true, "shows an example: \(String(describing: error))")
        }

        @Test(arguments: ["127.0.0.1,restrict=off:8080:80", "bad host:8080:80"])
        func portForwardRefusesAnAddressQEMUCannotTake(text: String) {
            // The address goes unescaped into QEMU's comma-separated -netdev option.
            let error = MachineUnitSupport.stasisError { _ = try PortForward(parsing: text) }
            #expect(error?.code == .invalidArgument)
        }

        @Test(arguments: [
            ("8000", 0, "127.0.0.1", 8000, "10.0.2.100"),
            ("127.0.0.1:8000", 0, "127.0.0.1", 8000, "10.0.2.100"),
            ("192.168.1.5:5432", 3, "192.168.1.5", 5432, "10.0.2.103"),
            ("db-host.internal:6379", 1, "db-host.internal", 6379, "10.0.2.101"),
            ("localhost:65535", 2, "localhost", 65535, "10.0.2.102"),
        ] as [(String, Int, String, UInt16, String)])
        func hostServiceParses(text: String, index: Int, address: String, port: UInt16, guestAddress: String) throws {
            let s = try HostService.parse(text, index: index)
            #expect(s == HostService(hostAddress: address, port: port, guestAddress: guestAddress))
            #expect(s.description == "\(guestAddress):\(port) -> host \(address):\(port)")
        }

        @Test(arguments: ["", "abc", "host:0", "host:65536", "host:abc", "a:b:c", "bad host:80", "a,b:80", "h/x:80", "127.0.0.1:"])
        func hostServiceRefuses(text: String) throws {
            let error = MachineUnitSupport.stasisError { _ = try HostService.parse(text, index: 0) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains("--allow-host") == true)
        }

        @Test func specRoundTripsThroughJSON() throws {
            let spec = MachineSpec(image: "debian", memoryMiB: 2048, cpus: 2,
                                   ports: [PortForward(hostPort: 8080, guestPort: 80)], network: .outbound,
                                   allowedHosts: [HostService(hostAddress: "127.0.0.1", port: 8000, guestAddress: "10.0.2.100")],
                                   accelerator: .tcg)
            let data = try JSONEncoder().encode(spec)
            #expect(try JSONDecoder().decode(MachineSpec.self, from: data) == spec)
        }

        /// A setting on by default whose key records and snapshots written before it existed lack:
        /// those booted without it, and say so when read; off round-trips.
        static func expectOnByDefaultButOffForOldRecords(_ key: String, _ setting: KeyPath<MachineSpec, Bool>, off: MachineSpec) throws {
            #expect(MachineSpec(image: "debian")[keyPath: setting])
            var json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(MachineSpec(image: "debian"))) as? [String: Any])
            #expect(json.removeValue(forKey: key) as? Bool == true)
            let old = try JSONDecoder().decode(MachineSpec.self, from: JSONSerialization.data(withJSONObject: json))
            #expect(!old[keyPath: setting])
            #expect(try JSONDecoder().decode(MachineSpec.self, from: JSONEncoder().encode(off)) == off)
        }

        /// Machines boot with init_on_free=1 unless told not to.
        @Test func zeroFreedMemoryIsTheDefaultButNotForOldRecords() throws {
            try Self.expectOnByDefaultButOffForOldRecords("zeroFreedMemory", \.zeroFreedMemory, off: MachineSpec(image: "debian", zeroFreedMemory: false))
        }

        /// Likewise deferred writeback.
        @Test func deferredWritebackIsTheDefaultButNotForOldRecords() throws {
            try Self.expectOnByDefaultButOffForOldRecords("deferWriteback", \.deferWriteback, off: MachineSpec(image: "debian", deferWriteback: false))
        }
    }
}

// MARK: - MachineState

extension MachineUnitTests {
    @Suite struct MachineStateTests {
        /// The diagram in MachineState.swift, plus restart from stopped or failed.
        static let allowed: Set<String> = [
            "created→starting", "stopped→starting", "failed→starting",
            "starting→running", "starting→failed", "starting→stopping",
            "running→paused", "paused→running",
            "running→stopping", "paused→stopping",
            "running→failed", "paused→failed", "stopping→failed",
            "stopping→stopped", "running→stopped", "paused→stopped",
        ]

        @Test(arguments: MachineState.allCases, MachineState.allCases)
        func transitionsFollowTheDiagram(from: MachineState, to: MachineState) {
            let key = "\(from.rawValue)→\(to.rawValue)"
            #expect(from.canMove(to: to) == Self.allowed.contains(key), "\(key)")
        }

        @Test(arguments: [
            (MachineState.stopped, MachineState.running), (.created, .running), (.created, .paused), (.stopped, .paused),
            (.failed, .running), (.running, .created), (.running, .starting), (.paused, .starting), (.stopped, .stopping),
            (.running, .running), (.stopped, .stopped), (.stopped, .failed), (.created, .stopped),
        ])
        func refusedTransitions(from: MachineState, to: MachineState) {
            #expect(!from.canMove(to: to))
        }

        @Test(arguments: [
            (MachineState.running, MachineState.paused), (.paused, .running), (.created, .starting), (.starting, .running),
            (.running, .stopping), (.stopping, .stopped), (.stopped, .starting), (.running, .failed),
        ])
        func allowedTransitions(from: MachineState, to: MachineState) {
            #expect(from.canMove(to: to))
        }

        @Test func onlyLiveStatesHaveAProcess() {
            #expect(MachineState.allCases.filter(\.hasProcess) == [.starting, .running, .paused, .stopping])
        }
    }
}

// MARK: - Accelerator

extension MachineUnitTests {
    @Suite struct AcceleratorTests {
        /// A fake root: `kvmPVM` adds sys/module/kvm_pvm, `devKVM` a read-write dev/kvm.
        static func fakeRoot(kvmPVM: Bool, devKVM: Bool) throws -> URL {
            let root = try MachineUnitSupport.temporaryFolder()
            if kvmPVM {
                try FileManager.default.createDirectory(at: root.appendingPathComponent("sys/module/kvm_pvm"), withIntermediateDirectories: true)
            }
            if devKVM {
                try FileManager.default.createDirectory(at: root.appendingPathComponent("dev"), withIntermediateDirectories: true)
                try Data().write(to: root.appendingPathComponent("dev/kvm"))
            }
            return root
        }

        @Test(arguments: [false, true])
        func nestedKvmPvmMeansTCG(devKVM: Bool) throws {
            let root = try Self.fakeRoot(kvmPVM: true, devKVM: devKVM)
            defer { try? FileManager.default.removeItem(at: root) }
            let choice = AcceleratorChoice.choose(.auto, systemRoot: root.path)
            #expect(choice.kind == .tcg)
            #expect(choice.reason.contains("kvm_pvm"), "\(choice.reason)")
        }

        @Test func missingDevKVMMeansTCG() throws {
            let root = try Self.fakeRoot(kvmPVM: false, devKVM: false)
            defer { try? FileManager.default.removeItem(at: root) }
            let choice = AcceleratorChoice.choose(.auto, systemRoot: root.path)
            #expect(choice.kind == .tcg)
            #expect(choice.reason.contains("/dev/kvm"), "\(choice.reason)")
        }

        @Test func usableDevKVMMeansKVM() throws {
            let root = try Self.fakeRoot(kvmPVM: false, devKVM: true)
            defer { try? FileManager.default.removeItem(at: root) }
            #expect(AcceleratorChoice.choose(.auto, systemRoot: root.path).kind == .kvm)
            #expect(AcceleratorChoice.choose(.kvm, systemRoot: root.path) == AcceleratorChoice(kind: .kvm, reason: "asked for with --accel kvm"))
        }

        @Test(arguments: [(false, false), (false, true), (true, true)])
        func askingForTCGGetsTCG(kvmPVM: Bool, devKVM: Bool) throws {
            let root = try Self.fakeRoot(kvmPVM: kvmPVM, devKVM: devKVM)
            defer { try? FileManager.default.removeItem(at: root) }
            let choice = AcceleratorChoice.choose(.tcg, systemRoot: root.path)
            #expect(choice.kind == .tcg)
            #expect(choice.reason.contains("--accel tcg"))
        }

        @Test func askingForKVMGetsKVMWithAWarning() throws {
            let root = try Self.fakeRoot(kvmPVM: true, devKVM: true)
            defer { try? FileManager.default.removeItem(at: root) }
            let choice = AcceleratorChoice.choose(.kvm, systemRoot: root.path)
            #expect(choice.kind == .kvm)
            #expect(choice.reason.contains("although") && choice.reason.contains("kvm_pvm"), "\(choice.reason)")
        }

        static let cpuinfo = """
            processor\t: 0
            vendor_id\t: GenuineIntel
            model name\t: Intel(R) Xeon(R) CPU @ 2.60GHz
            cpu MHz\t\t: 2596.150
            cache size\t: 33792 KB

            processor\t: 1
            cpu MHz\t\t: 3100.000

            """

        static let cpuinfoSamples: [String: (text: String, kHz: Int?)] = [
            "two CPUs, first wins": (cpuinfo, 2_596_150),
            "one line": ("cpu MHz : 3000.000\n", 3_000_000),
            "unparsable line skipped": ("cpu MHz\t: garbage\ncpu MHz\t: 1800.5\n", 1_800_500),
            "no cpu MHz": ("processor : 0\nmodel name : ARM\n", nil),
            "empty": ("", nil),
        ]

        @Test(arguments: cpuinfoSamples.keys.sorted())
        func hostTSCkHzParsesCpuinfo(sample: String) throws {
            let s = try #require(Self.cpuinfoSamples[sample])
            #expect(AcceleratorChoice.hostTSCkHz(cpuinfo: s.text) == s.kHz)
        }

        @Test func hostTSCkHzWithoutCpuinfoIsNil() {
            #expect(AcceleratorChoice.hostTSCkHz(cpuinfo: nil) == nil)
        }
    }
}

// MARK: - QEMU command line

extension MachineUnitTests {
    @Suite struct QEMUCommandLineTests {
        static let home = StasisHome(root: URL(fileURLWithPath: "/tmp/smu-home"))
        static let id = "0123456789ab"

        static func commandLine(
            network: NetworkMode = .isolated, ports: [PortForward] = [], allowed: [HostService] = [],
            accelerator: AcceleratorChoice.Kind = .tcg, tscKHz: Int? = 2_596_150, memoryMiB: Int = 512
        ) -> QEMUCommandLine {
            let spec = MachineSpec(image: "debian", memoryMiB: memoryMiB, cpus: 2, ports: ports, network: network, allowedHosts: allowed)
            let record = MachineRecord(id: id, name: "web-1", spec: spec, autoRemove: false, engine: "qemu")
            let boot = BootArtifacts(kernel: URL(fileURLWithPath: "/k/vmlinuz"), initramfs: URL(fileURLWithPath: "/k/initrd.img"),
                                     kernelVersion: "6.1.0", imageDisk: URL(fileURLWithPath: "/i/disk.raw"))
            return QEMUCommandLine(record: record, paths: MachinePaths(home: home, id: id), boot: boot,
                                   accelerator: AcceleratorChoice(kind: accelerator, reason: "test"), tscKHz: tscKHz)
        }

        static var paths: MachinePaths { MachinePaths(home: home, id: id) }

        /// The kernel command line of a TCG machine with `spec`, word by word.
        static func kernelWords(_ spec: MachineSpec) -> [Substring] {
            let record = MachineRecord(id: id, name: "web-1", spec: spec, autoRemove: false, engine: "qemu")
            let boot = BootArtifacts(kernel: URL(fileURLWithPath: "/k/vmlinuz"), initramfs: URL(fileURLWithPath: "/k/initrd.img"),
                                     kernelVersion: "6.1.0", imageDisk: URL(fileURLWithPath: "/i/disk.raw"))
            return QEMUCommandLine(record: record, paths: paths, boot: boot,
                                   accelerator: AcceleratorChoice(kind: .tcg, reason: "test"), tscKHz: nil).kernelCommandLine.split(separator: " ")
        }

        @Test(arguments: [true, false])
        func initOnFreeFollowsTheSpec(zeroFreed: Bool) {
            let words = Self.kernelWords(MachineSpec(image: "debian", zeroFreedMemory: zeroFreed))
            #expect(words.contains("init_on_free=1") == zeroFreed, "\(words)")
        }

        @Test(arguments: [true, false])
        func deferredWritebackFollowsTheSpec(deferred: Bool) {
            let words = Self.kernelWords(MachineSpec(image: "debian", deferWriteback: deferred))
            #expect(words.contains("stasis.writeback=deferred") == deferred, "\(words)")
        }

        @Test func isolatedNetworkIsRestricted() throws {
            let args = Self.commandLine(network: .isolated).arguments
            let netdev = MachineUnitSupport.values(of: "-netdev", in: args)
            try #require(netdev.count == 1)
            #expect(netdev[0].split(separator: ",").contains("restrict=on"), "\(netdev[0])")
            #expect(netdev[0].hasPrefix("user,id=n0"))
            #expect(MachineUnitSupport.values(of: "-device", in: args).contains("virtio-net-device,netdev=n0,id=net0,mac=52:54:00:01:23:45"))
            #expect(Self.commandLine(network: .isolated).kernelCommandLine.contains("stasis.net=10.0.2.15/24,10.0.2.2"))
        }

        @Test func outboundNetworkIsNotRestricted() throws {
            let cl = Self.commandLine(network: .outbound)
            let netdev = MachineUnitSupport.values(of: "-netdev", in: cl.arguments)
            try #require(netdev.count == 1)
            #expect(!netdev[0].contains("restrict"), "\(netdev[0])")
            #expect(cl.kernelCommandLine.contains("stasis.net=10.0.2.15/24,10.0.2.2,10.0.2.3"))
        }

        @Test func noNetworkMeansNoCard() {
            let cl = Self.commandLine(network: .none, ports: [PortForward(hostPort: 8080, guestPort: 80)])
            #expect(cl.netdev == nil)
            #expect(!cl.arguments.contains("-netdev"))
            #expect(!cl.arguments.contains { $0.contains("virtio-net") || $0.contains("hostfwd") }, "\(cl.arguments)")
            #expect(cl.kernelCommandLine.contains("stasis.net=none"))
        }

        @Test(arguments: [NetworkMode.isolated, .outbound])
        func portsBecomeHostForwards(network: NetworkMode) throws {
            let ports = [try PortForward(parsing: "8080:80"), try PortForward(parsing: "0.0.0.0:2222:22")]
            let netdev = try #require(Self.commandLine(network: network, ports: ports).netdev)
            let parts = netdev.split(separator: ",").map(String.init)
            #expect(parts.contains("hostfwd=tcp:127.0.0.1:8080-:80"), "\(netdev)")
            #expect(parts.contains("hostfwd=tcp:0.0.0.0:2222-:22"), "\(netdev)")
        }

        @Test func allowedHostsBecomeGuestForwards() throws {
            let allowed = [try HostService.parse("127.0.0.1:8000", index: 0), try HostService.parse("5432", index: 1)]
            let netdev = try #require(Self.commandLine(network: .isolated, allowed: allowed).netdev)
            let parts = netdev.split(separator: ",").map(String.init)
            #expect(parts.contains("guestfwd=tcp:10.0.2.100:8000-cmd:socat - TCP:127.0.0.1:8000"), "\(netdev)")
            #expect(parts.contains("guestfwd=tcp:10.0.2.101:5432-cmd:socat - TCP:127.0.0.1:5432"), "\(netdev)")
            #expect(parts.contains("restrict=on"))
        }

        @Test func tscEarlyKHzOnlyUnderTCG() {
            #expect(Self.commandLine(accelerator: .tcg).kernelCommandLine.contains("tsc_early_khz=2596150"))
            #expect(!Self.commandLine(accelerator: .kvm).kernelCommandLine.contains("tsc_early_khz"))
            #expect(!Self.commandLine(accelerator: .tcg, tscKHz: nil).kernelCommandLine.contains("tsc_early_khz"))
            let append = MachineUnitSupport.values(of: "-append", in: Self.commandLine(accelerator: .tcg).arguments)
            #expect(append == [Self.commandLine(accelerator: .tcg).kernelCommandLine])
        }

        @Test func tcgGuestsKeepTheTSCAsTheirClock() {
            let tcg = Self.commandLine(accelerator: .tcg).kernelCommandLine.split(separator: " ")
            #expect(tcg.contains("tsc=reliable"), "without it the guest falls back to jiffies and loses time")
            #expect(!Self.commandLine(accelerator: .kvm).kernelCommandLine.contains("tsc="))
        }

        @Test func acceleratorAndCPU() {
            let tcg = Self.commandLine(accelerator: .tcg).arguments
            #expect(MachineUnitSupport.values(of: "-accel", in: tcg) == ["tcg,thread=multi"])
            #expect(MachineUnitSupport.values(of: "-cpu", in: tcg) == ["max"])
            let kvm = Self.commandLine(accelerator: .kvm).arguments
            #expect(MachineUnitSupport.values(of: "-accel", in: kvm) == ["kvm"])
            #expect(MachineUnitSupport.values(of: "-cpu", in: kvm) == ["host"])
            #expect(MachineUnitSupport.values(of: "-M", in: kvm) == ["microvm"])
        }

        @Test func memoryIsASharedFileInTheRunFolder() throws {
            let args = Self.commandLine(memoryMiB: 1536).arguments
            #expect(MachineUnitSupport.values(of: "-m", in: args) == ["1536M"])
            let backend = try #require(MachineUnitSupport.values(of: "-object", in: args).first { $0.hasPrefix("memory-backend-file") })
            let parts = backend.split(separator: ",").map(String.init)
            #expect(parts.contains("id=mem"))
            #expect(parts.contains("share=on"), "\(backend)")
            #expect(parts.contains("size=1536M"), "\(backend)")
            #expect(parts.contains("mem-path=\(Self.paths.memory.path)"), "\(backend)")
            #expect(Self.paths.memory.path == "/tmp/smu-home/machines/\(Self.id)/memory")
            #expect(MachineUnitSupport.values(of: "-machine", in: args) == ["memory-backend=mem"])
        }

        @Test func daemonizesWithAPidFile() {
            let args = Self.commandLine().arguments
            #expect(args.contains("-daemonize"))
            #expect(MachineUnitSupport.values(of: "-pidfile", in: args) == [Self.paths.pidFile.path])
            #expect(MachineUnitSupport.values(of: "-qmp", in: args) == ["unix:\(Self.paths.qmpSocket.path),server=on,wait=off"])
            #expect(args.contains("-no-reboot"))
        }

        @Test func fourAgentPorts() {
            let args = Self.commandLine().arguments
            let ports = MachineUnitSupport.values(of: "-device", in: args).filter { $0.hasPrefix("virtserialport") }
            #expect(ports.count == 4)
            #expect(AgentProtocol.portNames.count == 4)
            let chardevs = MachineUnitSupport.values(of: "-chardev", in: args)
            for (i, name) in AgentProtocol.portNames.enumerated() {
                #expect(ports.contains("virtserialport,bus=vser0.0,chardev=\(name),name=\(name),id=port\(i)"))
                #expect(chardevs.contains("socket,id=\(name),path=\(Self.paths.agentSocket(i).path),server=on,wait=off"))
            }
            #expect(MachineUnitSupport.values(of: "-device", in: args).contains("virtio-serial-device,id=vser0"))
        }

        @Test func bootFilesDiskAndConsole() {
            let args = Self.commandLine().arguments
            #expect(MachineUnitSupport.values(of: "-kernel", in: args) == ["/k/vmlinuz"])
            #expect(MachineUnitSupport.values(of: "-initrd", in: args) == ["/k/initrd.img"])
            #expect(MachineUnitSupport.values(of: "-drive", in: args).first?.contains("file=\(Self.paths.disk.path),format=qcow2") == true)
            #expect(MachineUnitSupport.values(of: "-chardev", in: args).contains("file,id=serial0,path=\(Self.paths.console.path),append=on"))
            #expect(MachineUnitSupport.values(of: "-name", in: args) == ["stasis-\(Self.id),process=stasis-\(Self.id)"])
            #expect(Self.commandLine().kernelCommandLine.contains("stasis.hostname=web-1"))
        }

        @Test func sameInputsGiveTheSameCommandLine() throws {
            // The device list is part of a snapshot's identity.
            let ports = [PortForward(hostPort: 1, guestPort: 2)]
            let allowed = [try HostService.parse("9000", index: 0)]
            #expect(Self.commandLine(ports: ports, allowed: allowed).arguments == Self.commandLine(ports: ports, allowed: allowed).arguments)
        }

        @Test func socketPathLengthIsChecked() throws {
            try MachinePaths(home: Self.home, id: Self.id).checkSocketPathLength()
            let deep = StasisHome(root: URL(fileURLWithPath: "/tmp/" + String(repeating: "d", count: 80)))
            let error = MachineUnitSupport.stasisError { try MachinePaths(home: deep, id: Self.id).checkSocketPathLength() }
            #expect(error?.code == .invalidArgument)
        }
    }
}

// MARK: - MachineStore

extension MachineUnitTests {
    @Suite struct MachineStoreTests {
        /// A store in its own temporary STASIS_HOME.
        struct Fixture {
            let home: StasisHome
            let store: MachineStore

            init() throws {
                home = StasisHome.fromEnvironment(["STASIS_HOME": try MachineUnitSupport.temporaryFolder().path])
                store = MachineStore(home: home)
            }

            func cleanup() { try? FileManager.default.removeItem(at: home.root) }

            func create(_ name: String? = nil) throws -> MachineRecord {
                try store.create(name: name, spec: MachineSpec(image: "debian"), autoRemove: false)
            }

            /// Puts a record in `state` with `pid`, as a crashed stasis would have left it.
            func force(_ record: MachineRecord, _ state: MachineState, pid: Int32?) throws -> MachineRecord {
                var r = record
                r.state = state
                r.pid = pid
                try store.save(r)
                return r
            }
        }

        @Test func createAssignsUniqueIDsAndNames() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            var records: [MachineRecord] = []
            for _ in 0 ..< 20 { records.append(try f.create()) }
            #expect(Set(records.map(\.id)).count == 20)
            #expect(Set(records.map(\.name)).count == 20)
            for r in records {
                #expect(r.id.count == 12 && r.id.allSatisfy(\.isHexDigit), "\(r.id)")
                #expect(throws: Never.self) { try MachineStore.validateName(r.name) }
                #expect(r.state == .created && r.pid == nil && r.engine == "qemu")
                for other in records where other.id != r.id {
                    #expect(!other.id.hasPrefix(r.id), "\(r.id) is a prefix of \(other.id)")
                }
                #expect(FileManager.default.fileExists(atPath: MachinePaths(home: f.home, id: r.id).record.path))
            }
            let listed = try f.store.list()
            #expect(Set(listed.map(\.id)) == Set(records.map(\.id)))
            #expect(zip(listed, listed.dropFirst()).allSatisfy { $0.0.created <= $0.1.created }, "oldest first")
        }

        @Test func createKeepsTheGivenNameAndSpec() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let spec = MachineSpec(image: "bb", memoryMiB: 256, cpus: 2, ports: [PortForward(hostPort: 8080, guestPort: 80)],
                                   network: .none, accelerator: .tcg)
            let r = try f.store.create(name: "web.prod_1-a", spec: spec, autoRemove: true)
            let loaded = try f.store.load(id: r.id)
            #expect(loaded.name == "web.prod_1-a")
            #expect(loaded.spec == spec)
            #expect(loaded.autoRemove)
        }

        @Test func duplicateNameIsRefusedNamingTheOtherMachine() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let first = try f.create("dup")
            let error = MachineUnitSupport.stasisError { _ = try f.create("dup") }
            #expect(error?.code == .alreadyExists)
            #expect(error?.message.contains(first.id) == true, "\(String(describing: error))")
            #expect(error?.message.contains("dup") == true)
            #expect(try f.store.list().count == 1)
        }

        @Test(arguments: ["", "-lead", ".hidden", "_x", "has space", "a/b", "../up", "ümlaut", "name!", "tab\there",
                          String(repeating: "a", count: 64)])
        func invalidNamesAreRefused(name: String) throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let error = MachineUnitSupport.stasisError { _ = try f.create(name) }
            #expect(error?.code == .invalidArgument)
            #expect(try f.store.list().isEmpty, "nothing created for '\(name)'")
        }

        @Test(arguments: ["a", "7", "web-1", "a.b_c-d", String(repeating: "z", count: 63)])
        func validNamesAreAccepted(name: String) throws {
            let f = try Fixture()
            defer { f.cleanup() }
            #expect(try f.create(name).name == name)
        }

        @Test func findByNameIDAndUniquePrefix() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let a = try f.create("alpha")
            let b = try f.create("beta")
            #expect(try f.store.find("alpha").id == a.id)
            #expect(try f.store.find("beta").id == b.id)
            #expect(try f.store.find(a.id).name == "alpha")
            // The shortest prefix of a's id that b's id does not share.
            let common = zip(a.id, b.id).prefix { $0.0 == $0.1 }.count
            #expect(try f.store.find(String(a.id.prefix(common + 1))).id == a.id)
            #expect(try f.store.find(String(b.id.prefix(common + 1))).id == b.id)
            let ambiguous = MachineUnitSupport.stasisError { _ = try f.store.find(String(a.id.prefix(common))) }
            #expect(ambiguous?.code == .invalidArgument, "a prefix both share")
        }

        @Test(arguments: ["gamma", "zzzzzzzzzzzzz", "ALPHA", "alph"])
        func findOfAnUnknownMachineIsNotFound(reference: String) throws {
            let f = try Fixture()
            defer { f.cleanup() }
            _ = try f.create("alpha")
            let error = MachineUnitSupport.stasisError { _ = try f.store.find(reference) }
            #expect(error?.code == .notFound)
            #expect(error?.message.contains(reference) == true)
        }

        @Test(arguments: [MachineState.running, .paused, .starting], [getpid(), 999_999])
        func deadProcessMeansFailedWithTheConsoleTail(state: MachineState, pid: Int32) throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let r = try f.force(try f.create("crashy"), state, pid: pid)
            let console = (1 ... 40).map { "boot line \($0)" }.joined(separator: "\n") + "\nKernel panic - not syncing: VFS\n"
            try Data(console.utf8).write(to: MachinePaths(home: f.home, id: r.id).console)

            let found = try f.store.find("crashy")
            #expect(found.state == .failed)
            #expect(found.pid == nil)
            let failure = try #require(found.failure)
            #expect(failure.contains("Console log tail"), "\(failure)")
            #expect(failure.contains("Kernel panic - not syncing"), "\(failure)")
            #expect(failure.contains("boot line 40") && !failure.contains("boot line 20\n"), "only the tail: \(failure)")
            let saved = try f.store.load(id: r.id)
            #expect(saved.state == .failed && saved.failure == found.failure, "the reconciled record is saved")
        }

        @Test func deadProcessWithoutAConsoleLogSaysSo() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let r = try f.force(try f.create(), .running, pid: 999_999)
            let reconciled = try f.store.reconcile(r)
            #expect(reconciled.state == .failed)
            #expect(reconciled.failure?.contains("(no console log)") == true)
        }

        @Test(arguments: [getpid(), 999_999] as [Int32?] + [nil])
        func stoppingWithoutAProcessMeansStopped(pid: Int32?) throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let r = try f.force(try f.create("halting"), .stopping, pid: pid)
            let listed = try f.store.list()
            try #require(listed.count == 1)
            #expect(listed[0].state == .stopped)
            #expect(listed[0].pid == nil)
            #expect(listed[0].failure == nil)
            #expect(try f.store.load(id: r.id).state == .stopped)
        }

        @Test(arguments: [MachineState.created, .stopped, .failed])
        func recordsWithoutAProcessAreLeftAlone(state: MachineState) throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let r = try f.force(try f.create(), state, pid: 999_999)
            let reconciled = try f.store.reconcile(r)
            #expect(reconciled == r)
        }

        @Test func startingWithoutAPidYetIsLeftAlone() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let r = try f.force(try f.create(), .starting, pid: nil)
            #expect(try f.store.reconcile(r).state == .starting)
        }

        @Test func liveProcessNamingTheMachineStaysRunning() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let created = try f.create()
            // Stands in for QEMU: its command line carries "stasis-<id>" as QEMU's -name does.
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "echo ready; read line", "stasis-\(created.id)"]
            let stdin = Pipe()
            let stdout = Pipe()
            process.standardInput = stdin
            process.standardOutput = stdout
            try process.run()
            defer {
                try? stdin.fileHandleForWriting.close()
                process.waitUntilExit()
            }
            // Once it printed, the shell runs and its command line is in place.
            #expect(stdout.fileHandleForReading.readData(ofLength: 6) == Data("ready\n".utf8))

            let r = try f.force(created, .running, pid: process.processIdentifier)
            let reconciled = try f.store.reconcile(r)
            #expect(reconciled.state == .running)
            #expect(reconciled.pid == process.processIdentifier)
            // The same process does not count for another machine.
            let other = try f.force(try f.create(), .running, pid: process.processIdentifier)
            #expect(try f.store.reconcile(other).state == .failed)
        }

        @Test func consoleTailKeepsTheLastLines() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let r = try f.create()
            try Data((1 ... 30).map { "l\($0)" }.joined(separator: "\n").utf8).write(to: MachinePaths(home: f.home, id: r.id).console)
            #expect(f.store.consoleTail(r.id, lines: 3) == "l28\nl29\nl30")
            #expect(f.store.consoleTail(r.id).split(separator: "\n").count == 15)
        }

        @Test func deleteLeavesNothingListed() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let a = try f.create("one")
            let b = try f.create("two")
            try f.store.delete(id: a.id)
            #expect(try f.store.list().map(\.id) == [b.id])
            try f.store.delete(id: b.id)
            #expect(try f.store.list().isEmpty)
            #expect(!FileManager.default.fileExists(atPath: MachinePaths(home: f.home, id: a.id).directory.path))
            #expect(try FileManager.default.contentsOfDirectory(atPath: f.home.tmp.path).isEmpty, "no trash left")
            let error = MachineUnitSupport.stasisError { _ = try f.store.find("one") }
            #expect(error?.code == .notFound)
            // The name is free again.
            #expect(try f.create("one").name == "one")
        }

        @Test func unreadableRecordsAreSkipped() throws {
            let f = try Fixture()
            defer { f.cleanup() }
            let good = try f.create("good")
            let broken = f.home.machines.appendingPathComponent("abcdefabcdef")
            try FileManager.default.createDirectory(at: broken, withIntermediateDirectories: true)
            try Data("{not json".utf8).write(to: broken.appendingPathComponent("machine.json"))
            #expect(try f.store.list().map(\.id) == [good.id])
        }
    }
}

extension MachineUnitTests {
    /// `QEMUEngine.version` asks the binary once per file identity: a replaced binary is asked again.
    @Suite struct QEMUVersionTests {
        @Test func theVersionIsAskedAgainOnlyWhenTheBinaryChanges() async throws {
            let dir = try MachineUnitSupport.temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let binary = dir.appendingPathComponent("qemu-system-x86_64")
            let counter = dir.appendingPathComponent("asked")
            func install(_ version: String) async throws {
                let script = "#!/bin/sh\necho x >> '\(counter.path)'\necho 'QEMU emulator version \(version)'\necho 'Copyright'\n"
                let source = dir.appendingPathComponent("source")
                let staged = dir.appendingPathComponent("staged")
                try Data(script.utf8).write(to: source)
                // The executable is written by a child process: a file this process had open for
                // writing stays open in any child another test forks meanwhile, until it execs,
                // and executing the file then fails with ETXTBSY.
                try await HostTool.run("install", ["-m", "0755", source.path, staged.path])
                try AtomicFile.rename(staged, over: binary)  // a new inode, like a package upgrade
            }
            func asked() -> Int { ((try? String(contentsOf: counter, encoding: .utf8)) ?? "").split(separator: "\n").count }
            try await install("1.0")
            let engine = QEMUEngine(qemuBinary: binary.path)
            #expect(try await engine.version() == "QEMU emulator version 1.0")
            #expect(try await engine.version() == "QEMU emulator version 1.0")
            #expect(asked() == 1)
            try await install("2.0")
            #expect(try await engine.version() == "QEMU emulator version 2.0")
            #expect(asked() == 2)

            // With a version file, the next process (here: the in-process memory forgotten)
            // reads the answer instead of asking, until the binary changes again.
            let remembered = QEMUEngine(qemuBinary: binary.path, versionFile: dir.appendingPathComponent("qemu-version.json"))
            #expect(try await remembered.version() == "QEMU emulator version 2.0")
            #expect(asked() == 2, "known in this process already")
            QEMUVersionCache.shared.withLock { $0.removeAll() }
            #expect(try await remembered.version() == "QEMU emulator version 2.0")
            #expect(asked() == 3, "asked once, then written down")
            QEMUVersionCache.shared.withLock { $0.removeAll() }
            #expect(try await remembered.version() == "QEMU emulator version 2.0")
            #expect(asked() == 3, "read from the version file")
            try await install("3.0")
            QEMUVersionCache.shared.withLock { $0.removeAll() }
            #expect(try await remembered.version() == "QEMU emulator version 3.0")
            #expect(asked() == 4)
        }
    }
}

extension MachineUnitTests {
    /// `DiskLayers.holdsNoData` tells a layer the guest wrote nothing into from one it wrote into.
    @Suite struct DiskLayerTests {
        @Test func aLayerHoldsNoDataUntilSomethingIsWrittenIntoIt() async throws {
            let dir = try MachineUnitSupport.temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let base = dir.appendingPathComponent("base.qcow2")
            try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2"] + DiskLayers.createOptions + [base.path, "64M"])
            try await HostTool.run("qemu-io", ["-c", "write -P 7 0 64k", base.path])
            func layer(_ name: String, _ command: String?) async throws -> Bool {
                let url = dir.appendingPathComponent(name)
                try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2"] + DiskLayers.createOptions + ["-b", base.path, "-F", "qcow2", url.path])
                if let command { try await HostTool.run("qemu-io", ["-c", command, url.path]) }
                return try DiskLayers.holdsNoData(url)
            }
            #expect(try await layer("empty.qcow2", nil))
            #expect(try await !layer("written.qcow2", "write -P 9 32M 4k"))
            #expect(try await !layer("zeroed.qcow2", "write -z 0 4k"), "zeros over the backing's data are data of its own")
            #expect(try !DiskLayers.holdsNoData(base))
            let raw = dir.appendingPathComponent("raw")
            try Data(count: 4096).write(to: raw)
            #expect(throws: StasisError.self) { try DiskLayers.holdsNoData(raw) }
        }
    }
}

extension MachineUnitTests {
    /// `QCOW2Overlay` writes the very bytes `qemu-img create -u` writes, which QEMU then reads
    /// as an empty layer over its backing file.
    @Suite struct QCOW2OverlayTests {
        @Test(arguments: [
            (1_395_654_656, "qcow2"), (64 << 20, "raw"), ((2 << 20) + 512, "qcow2"), (512, "raw"), (1000, "raw"),
            (100 << 30, "qcow2"), (QCOW2Overlay.maxVirtualSize, "qcow2"),
        ])
        func theBytesAreQemuImgs(size: Int, format: String) async throws {
            let dir = try MachineUnitSupport.temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let backing = dir.appendingPathComponent("a backing file with a rather longer name, as snapshots have.\(format)").path
            let theirs = dir.appendingPathComponent("theirs.qcow2")
            try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2"] + DiskLayers.createOptions
                + ["-u", "-b", backing, "-F", format, theirs.path, "\(size)"])
            let ours = dir.appendingPathComponent("ours.qcow2")
            try await QCOW2Overlay.create(ours, backing: backing, format: format, virtualSize: size)
            #expect(try Data(contentsOf: ours) == Data(contentsOf: theirs))
            #expect(try QCOW2Overlay.virtualSize(ofQCOW2: ours) == (size + 511) / 512 * 512)
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["ours.qcow2", "theirs.qcow2"], "nothing staged is left")
            #expect(try DiskLayers.holdsNoData(ours))
        }

        @Test func qemuReadsTheBackingThroughIt() async throws {
            let dir = try MachineUnitSupport.temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let raw = dir.appendingPathComponent("base.raw")
            try Data(count: 3 << 20).write(to: raw)
            try await HostTool.run("qemu-io", ["-f", "raw", "-c", "write -P 7 1M 4k", raw.path])
            let middle = dir.appendingPathComponent("middle.qcow2")
            try await QCOW2Overlay.create(middle, over: raw, format: "raw")
            try await HostTool.run("qemu-io", ["-c", "write -P 9 2M 4k", middle.path])
            let top = dir.appendingPathComponent("top.qcow2")
            try await QCOW2Overlay.create(top, over: middle, format: "qcow2")
            try await HostTool.run("qemu-img", ["check", "-q", top.path])
            try await HostTool.run("qemu-io", ["-c", "read -P 7 1M 4k", "-c", "read -P 9 2M 4k", "-c", "read -P 0 0 4k", top.path])
            let info = try await HostTool.run("qemu-img", ["info", "--output=json", top.path]).standardOutput
            #expect(info.contains("\"virtual-size\": \(3 << 20)"))
            #expect(info.contains("\"backing-filename-format\": \"qcow2\""))
            // Written once: an existing file is never overwritten.
            await #expect(throws: StasisError.self) { try await QCOW2Overlay.create(top, over: middle, format: "qcow2") }
        }

        @Test func aBackingNameThatCannotFitIsRefused() throws {
            #expect(throws: StasisError.self) { try QCOW2Overlay.bytes(backing: String(repeating: "x", count: 4000), format: "qcow2", virtualSize: 1 << 20) }
            #expect(throws: StasisError.self) { try QCOW2Overlay.bytes(backing: "", format: "qcow2", virtualSize: 1 << 20) }
            #expect(throws: StasisError.self) { try QCOW2Overlay.bytes(backing: "/a", format: "qcow2", virtualSize: 0) }
        }
    }
}

extension MachineUnitTests {
    /// `AgentClient.syncClock`'s rule: a slow round trip is repeated aimed half a trip ahead, and
    /// a quick one counts only if its aim was within the tolerance.
    @Suite struct ClockSyncTests {
        /// Runs the rule over scripted round trips; returns the leads it aimed with (ms).
        static func leads(_ trips: [Int], attempts: Int = 8) async throws -> [Double] {
            var script = trips[...]
            var used: [Double] = []
            _ = try await AgentClient.syncClock(tolerance: .milliseconds(250), attempts: attempts) { lead in
                used.append(lead.milliseconds)
                return .milliseconds(script.popFirst() ?? 0)
            }
            return used
        }

        @Test func aQuickFirstTripIsEnough() async throws {
            #expect(try await Self.leads([40]) == [0])
        }

        @Test func aQuickTripAimedFarAheadIsRepeatedAimedByItself() async throws {
            // 3 s (a guest still faulting its memory in), then quick: the quick trip was aimed
            // 1.5 s ahead, so the guest is that far ahead; one more trip aimed 50 ms ahead.
            #expect(try await Self.leads([3000, 100, 100]) == [0, 1500, 50])
        }

        @Test func everyTripSlowStopsAfterTheAttempts() async throws {
            #expect(try await Self.leads(Array(repeating: 1000, count: 10), attempts: 4) == [0, 500, 500, 500])
        }

        /// Runs the protocol-3 rule over scripted readings (ms); returns how many it took and the
        /// one it chose.
        static func quickest(_ readings: [ClockReading], attempts: Int = 8) async throws -> (taken: Int, chosen: ClockReading) {
            var taken = 0
            let chosen = try await AgentClient.quickestReading(tolerance: .milliseconds(250), attempts: attempts) {
                defer { taken += 1 }
                return readings[taken]
            }
            return (taken, chosen)
        }

        static func reading(sent: Int64, guest: Int64, received: Int64) -> ClockReading {
            ClockReading(sent: sent * 1_000_000, guest: guest * 1_000_000, received: received * 1_000_000)
        }

        @Test func theGuestOffsetIsMeasuredFromTheMiddleOfTheTrip() {
            // Guest 1 s behind, read 100 ms into a 200 ms trip.
            let r = Self.reading(sent: 10_000, guest: 9_100, received: 10_200)
            #expect(r.guestAhead == -1_000_000_000)
            #expect(r.roundTrip == .milliseconds(200))
        }

        @Test func aQuickReadingEndsTheSearch() async throws {
            let (taken, chosen) = try await Self.quickest([
                Self.reading(sent: 0, guest: 0, received: 3_000),
                Self.reading(sent: 3_000, guest: 3_100, received: 3_200),
                Self.reading(sent: 3_200, guest: 3_200, received: 3_210),
            ])
            #expect(taken == 2)
            #expect(chosen.roundTrip == .milliseconds(200))
        }

        @Test func everyReadingSlowKeepsTheQuickest() async throws {
            // A host loaded for seconds: the quickest of the slow readings bounds the error.
            let trips: [Int64] = [4_000, 900, 2_500, 1_200]
            var t: Int64 = 0
            let readings = trips.map { trip in defer { t += trip }; return Self.reading(sent: t, guest: t, received: t + trip) }
            let (taken, chosen) = try await Self.quickest(readings, attempts: 4)
            #expect(taken == 4)
            #expect(chosen.roundTrip == .milliseconds(900))
        }
    }
}
