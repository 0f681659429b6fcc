import ArgumentParser
import Foundation
import Guest
import Images
import Machines
import Snapshots
import StasisCore

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a new machine from an image and run a command in it.",
        discussion: """
        Without -d the command runs attached and the machine stops when it exits (removed too with \
        --rm); stasis exits with the command's exit code. With -d the machine keeps running, the \
        command (if any) runs in the background with its output in `stasis logs`, and the machine's \
        name is printed.

        The network is isolated by default: the guest reaches neither the host nor any network, but \
        -p forwards host ports in, and --allow-host lets it reach one host service at a time.
        """
    )

    @Flag(name: .shortAndLong, help: "Run in the background and print the machine's name.")
    var detach = false

    @Option(help: "Name of the machine (default: generated).")
    var name: String?

    @Option(help: ArgumentHelp("Guest memory, e.g. 512M or 2G.", valueName: "SIZE"))
    var memory = "512M"

    @Option(help: "Number of virtual CPUs.")
    var cpus = 1

    @Option(name: .shortAndLong, help: ArgumentHelp("Forward a host TCP port into the guest.", valueName: "[ADDR:]HOSTPORT:GUESTPORT"))
    var publish: [String] = []

    @Option(help: ArgumentHelp("Network: isolated (default; no route out), outbound (reaches the host and every network it can), none (no NIC).", valueName: "MODE"))
    var network: NetworkMode = .isolated

    @Option(name: .customLong("allow-host"), help: ArgumentHelp("Let the guest reach this host TCP service at 10.0.2.100+N:PORT.", valueName: "ADDR:PORT"))
    var allowHost: [String] = []

    @Option(help: ArgumentHelp("Accelerator: auto (KVM where it can run a stock kernel, else TCG), kvm or tcg.", valueName: "ACCEL"))
    var accel: AcceleratorPreference = .auto

    @Flag(inversion: .prefixedNo, help: ArgumentHelp(
        "Have the guest kernel zero memory as it frees it (init_on_free=1): what a finished process used is stored as nothing in the next snapshot. Costs ~2 s of a cold boot under TCG (once per image with warm start)."))
    var zeroFreedMemory = true

    @Flag(inversion: .prefixedNo, help: ArgumentHelp(
        "Keep what the guest writes in its page cache until a program syncs it or it is an hour old, instead of writing it to disk within seconds: a snapshot then stores it once, in RAM, not again in its disk layer. Unsynced writes of a machine killed without a snapshot are lost, as on a power cut."))
    var deferWriteback = true

    @Flag(help: "Remove the machine when it stops.")
    var rm = false

    @Flag(help: "Boot the kernel instead of restoring the image's boot snapshot (warm start; --allow-host always boots).")
    var cold = false

    @Option(help: ArgumentHelp("Seconds to wait for the guest to boot.", valueName: "SECONDS"))
    var bootTimeout: Double = 120

    @OptionGroup var process: ProcessOptions
    @OptionGroup var global: GlobalOptions

    @Argument(help: "The image to boot (`stasis images` lists them).")
    var image: String

    @Argument(parsing: .captureForPassthrough, help: "The command to run (default: /bin/sh).")
    var command: [String] = []

    func validate() throws {
        if cpus < 1 || cpus > 64 { throw ValidationError("--cpus must be between 1 and 64") }
        if detach && rm { throw ValidationError("--rm cannot be combined with -d: remove the machine with `stasis rm -f`") }
        if detach && process.interactive { throw ValidationError("-i needs an attached command: drop -d") }
    }

    func run() async throws {
        let code = try await reportingErrors { try await runMachine() }
        if code != 0 { throw ExitCode(code) }
    }

    struct Started: Encodable {
        var id: String, name: String, state: String, accelerator: String, acceleratorReason: String, bootMilliseconds: Double
    }

    private func runMachine() async throws -> Int32 {
        let home = global.home
        let spec = MachineSpec(
            image: image, memoryMiB: try MachineSpec.parseMemory(memory), cpus: cpus,
            ports: try publish.map { try PortForward(parsing: $0) }, network: network,
            allowedHosts: try allowHost.enumerated().map { try HostService.parse($1, index: $0) }, accelerator: accel,
            zeroFreedMemory: zeroFreedMemory, deferWriteback: deferWriteback)
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        let request = try process.request(argv.isEmpty ? ["/bin/sh"] : argv,
                                          detach: detach, outputPath: detach ? "/dev/console" : "")
        let store = MachineStore(home: home)
        try store.engine.checkInstalled(for: spec)
        let clock = ContinuousClock()
        let start = clock.now
        let warm = !cold && WarmStart.applies(to: spec)
        let machine = warm ? try await startWarm(spec, store: store) : try await bootCold(spec, store: store)
        let booted = clock.now - start
        let current = await machine.record
        for service in spec.allowedHosts { progress("guest reaches \(service)") }
        if detach {
            if !argv.isEmpty {
                _ = try await machine.withAgent { agent in try await agent.spawn(request) }
            }
            if global.json {
                try printJSON(Started(id: current.id, name: current.name, state: current.state.rawValue,
                                      accelerator: current.accelerator ?? "", acceleratorReason: current.acceleratorReason ?? "",
                                      bootMilliseconds: booted.milliseconds))
            } else {
                print(current.name)
            }
            return 0
        }
        let how = current.restoredFrom.map { "restored from boot snapshot \($0) in" } ?? "running on \(current.accelerator ?? "?") after"
        progress("\(current.name) \(how) \(String(format: "%.0f", booted.milliseconds)) ms")
        let code: Int32
        do {
            code = try await runAttached(machine, request)
        } catch {
            try? await machine.stop()
            if rm { try? await machine.remove(force: true) }
            throw error
        }
        try await machine.stop()
        if rm { try await machine.remove(force: true) }
        return code
    }

    private func bootCold(_ spec: MachineSpec, store: MachineStore) async throws -> Machine {
        let boot = try await BootArtifacts.resolve(home: store.home, image: image)
        let machine = Machine(record: try store.create(name: name, spec: spec, autoRemove: rm), store: store)
        do {
            _ = try await machine.boot(boot, timeout: .seconds(bootTimeout))
        } catch {
            if rm { try? await machine.remove(force: true) }
            throw error
        }
        return machine
    }

    /// Restores the image's boot snapshot, made by booting once if there is none yet.
    private func startWarm(_ spec: MachineSpec, store: MachineStore) async throws -> Machine {
        // A taken name fails now, not after a boot snapshot was made for nothing.
        if let name { try store.checkNameFree(name) }
        let warm = WarmStart(snapshotter: Snapshotter(home: store.home, machines: store))
        let (snapshot, made) = try await warm.bootSnapshot(for: spec, bootTimeout: .seconds(bootTimeout))
        if made { progress("made boot snapshot \(snapshot.id) of \(image): later runs of this image start from it (--cold boots)") }
        return try await warm.restore(snapshot, name: name, ports: spec.ports, autoRemove: rm)
    }
}

extension NetworkMode: ExpressibleByArgument {}
extension AcceleratorPreference: ExpressibleByArgument {}
