import Agents
import Machines
import Models

/// The body of `POST /v1/sessions`; every field is optional.
public struct CreateSessionRequest: Codable, Sendable {
    public var image: String?
    /// "512M", "1G", …
    public var memory: String?
    public var cpus: Int?
    /// Docker's `-p`: "HOST:GUEST" or "ADDR:HOST:GUEST".
    public var ports: [String]?
    /// Host services the guest may reach, "ADDR:PORT".
    public var allowHosts: [String]?
    public var idleTimeoutSeconds: Double?
    public var model: ModelConfiguration?
    public var systemPrompt: String?
    public var shellTimeoutSeconds: Double?
    public var outputLimitBytes: Int?
    /// Snapshot the machine at the end of every turn (default yes).
    public var turnSnapshots: Bool?

    public init(image: String? = nil, memory: String? = nil, cpus: Int? = nil, ports: [String]? = nil, allowHosts: [String]? = nil,
                idleTimeoutSeconds: Double? = nil, model: ModelConfiguration? = nil, systemPrompt: String? = nil,
                shellTimeoutSeconds: Double? = nil, outputLimitBytes: Int? = nil, turnSnapshots: Bool? = nil) {
        self.image = image
        self.memory = memory
        self.cpus = cpus
        self.ports = ports
        self.allowHosts = allowHosts
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.model = model
        self.systemPrompt = systemPrompt
        self.shellTimeoutSeconds = shellTimeoutSeconds
        self.outputLimitBytes = outputLimitBytes
        self.turnSnapshots = turnSnapshots
    }

    /// The configuration this request asks for, on top of the defaults.
    func configuration() throws -> SessionConfiguration {
        var configuration = SessionConfiguration()
        if let image { configuration.image = image }
        if let memory { configuration.memoryMiB = try MachineSpec.parseMemory(memory) }
        if let cpus { configuration.cpus = cpus }
        if let ports { configuration.ports = try ports.map { try PortForward(parsing: $0) } }
        if let allowHosts { configuration.allowedHosts = try allowHosts.enumerated().map { try HostService.parse($1, index: $0) } }
        if let idleTimeoutSeconds { configuration.idleTimeoutSeconds = idleTimeoutSeconds }
        if let model { configuration.model = model }
        if let systemPrompt { configuration.systemPrompt = systemPrompt }
        if let shellTimeoutSeconds { configuration.shellTimeoutSeconds = shellTimeoutSeconds }
        if let outputLimitBytes { configuration.outputLimitBytes = outputLimitBytes }
        if let turnSnapshots { configuration.turnSnapshots = turnSnapshots }
        return configuration
    }
}

/// The body of `POST /v1/sessions/{id}/messages`.
struct SendMessageRequest: Codable {
    var text: String
    /// Answer only when the turn has ended.
    var wait: Bool?
}
