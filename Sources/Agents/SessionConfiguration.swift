import Machines
import Models

/// How a session's machine, model and tools are set up; fixed when the session is created.
public struct SessionConfiguration: Codable, Sendable, Equatable {
    /// The image the session's machine boots from.
    public var image: String
    /// Guest memory in MiB.
    public var memoryMiB: Int
    /// Virtual CPUs.
    public var cpus: Int
    /// Host ports forwarded into the machine (a dev server the user wants to reach).
    public var ports: [PortForward]
    /// Host services the guest may reach (a local git server, a wheel index).
    public var allowedHosts: [HostService]
    /// Seconds without a message after which the machine is snapshotted and stopped.
    public var idleTimeoutSeconds: Double
    /// The model that drives the session.
    public var model: ModelConfiguration
    /// The system prompt sent first on every model call.
    public var systemPrompt: String
    /// A `shell` tool call is killed after this many seconds.
    public var shellTimeoutSeconds: Double
    /// Tool output beyond this many bytes is cut, with a note saying how much was cut.
    public var outputLimitBytes: Int
    /// A turn stops after this many model calls, so a model that never stops calling tools ends.
    public var maxModelCallsPerTurn: Int
    /// Whether the machine is snapshotted (and keeps running) at the end of every turn, so the
    /// session can be forked at any earlier turn; nil (sessions made before it existed) is yes.
    public var turnSnapshots: Bool?

    /// `turnSnapshots`, nil read as yes.
    public var snapshotsEveryTurn: Bool { turnSnapshots ?? true }

    public static let defaultSystemPrompt = """
        You are an agent working in a Linux machine that is yours for this session. Use the tools \
        to run commands and to read and write files. The machine keeps its state between messages.
        """

    public init(
        image: String = "debian", memoryMiB: Int = 512, cpus: Int = 1, ports: [PortForward] = [],
        allowedHosts: [HostService] = [], idleTimeoutSeconds: Double = 30, model: ModelConfiguration = .scripted,
        systemPrompt: String = SessionConfiguration.defaultSystemPrompt, shellTimeoutSeconds: Double = 120,
        outputLimitBytes: Int = 16 * 1024, maxModelCallsPerTurn: Int = 32, turnSnapshots: Bool = true
    ) {
        self.image = image
        self.memoryMiB = memoryMiB
        self.cpus = cpus
        self.ports = ports
        self.allowedHosts = allowedHosts
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.model = model
        self.systemPrompt = systemPrompt
        self.shellTimeoutSeconds = shellTimeoutSeconds
        self.outputLimitBytes = outputLimitBytes
        self.maxModelCallsPerTurn = maxModelCallsPerTurn
        self.turnSnapshots = turnSnapshots
    }

    /// The machine this configuration asks for.
    var machineSpec: MachineSpec {
        MachineSpec(image: image, memoryMiB: memoryMiB, cpus: cpus, ports: ports, allowedHosts: allowedHosts)
    }
}
