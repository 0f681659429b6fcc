/// How to start a process in the guest.
public struct ExecRequest: Sendable, Equatable {
    /// Program and arguments; the program is looked up in PATH when it has no slash.
    public var argv: [String]
    /// `KEY=VALUE` entries added to (or replacing) the agent's defaults (PATH, HOME, TERM).
    public var environment: [String]
    /// Working folder; empty means the user's home folder.
    public var workingDirectory: String
    /// A user name from the guest's /etc/passwd, or `uid[:gid]`; empty means root.
    public var user: String
    /// Whether the host will send standard input; if not, the process reads /dev/null.
    public var stdin: Bool
    /// Kill the process group after this long; 0 means never.
    public var timeoutMilliseconds: UInt64
    /// Start and forget: the reply is `started`, output goes to `outputPath` (or /dev/null),
    /// and the process keeps running when the host disconnects.
    public var detach: Bool
    /// Where a detached process's output goes; empty means /dev/null.
    public var outputPath: String

    public init(argv: [String], environment: [String] = [], workingDirectory: String = "", user: String = "",
                stdin: Bool = false, timeoutMilliseconds: UInt64 = 0, detach: Bool = false, outputPath: String = "") {
        self.argv = argv
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.user = user
        self.stdin = stdin
        self.timeoutMilliseconds = timeoutMilliseconds
        self.detach = detach
        self.outputPath = outputPath
    }
}

/// How a guest process ended.
public struct ExitStatus: Sendable, Equatable {
    /// The exit code, or nil when a signal ended the process.
    public var code: Int32?
    /// The signal that ended the process, or nil when it exited.
    public var signal: Int32?
    /// True when the agent killed it because its timeout passed.
    public var timedOut: Bool

    public init(code: Int32? = nil, signal: Int32? = nil, timedOut: Bool = false) {
        self.code = code
        self.signal = signal
        self.timedOut = timedOut
    }

    /// The shell's convention: the code, or 128 + signal.
    public var shellCode: Int32 { code ?? (128 + (signal ?? 0)) }
}

/// Static IPv4 settings for one guest interface.
public struct NetworkConfig: Sendable, Equatable {
    public var interface: String
    public var address: String
    public var prefixLength: UInt8
    public var gateway: String
    public var nameservers: [String]

    public init(interface: String = "eth0", address: String, prefixLength: UInt8, gateway: String, nameservers: [String] = []) {
        self.interface = interface
        self.address = address
        self.prefixLength = prefixLength
        self.gateway = gateway
        self.nameservers = nameservers
    }
}

/// What the agent reports about the guest when a host says hello.
public struct GuestInfo: Sendable, Equatable {
    public var agentVersion: UInt16
    public var kernelRelease: String
    public var hostname: String
    /// CLOCK_BOOTTIME in nanoseconds: how long the guest has run (snapshots excluded).
    public var uptimeNanoseconds: UInt64
    /// Bumped by the host after every restore, so guest programs can notice they were cloned.
    public var generation: UInt64

    public init(agentVersion: UInt16, kernelRelease: String, hostname: String, uptimeNanoseconds: UInt64, generation: UInt64) {
        self.agentVersion = agentVersion
        self.kernelRelease = kernelRelease
        self.hostname = hostname
        self.uptimeNanoseconds = uptimeNanoseconds
        self.generation = generation
    }
}

/// Which output stream a chunk came from.
public enum StandardStream: UInt8, Sendable {
    case stdout = 1
    case stderr = 2
}

/// Messages the host sends. The request id pairs each reply with its request; for `stdin`,
/// `closeStdin` and `signal` it is the id of the `exec` they refer to.
public enum HostMessage: Sendable, Equatable {
    case hello(nonce: UInt64, version: UInt16)
    case exec(ExecRequest)
    case stdin([UInt8])
    case closeStdin
    case signal(Int32)
    case readFile(path: String)
    case writeFile(path: String, mode: UInt32, data: [UInt8], append: Bool)
    case setClock(unixNanoseconds: Int64)
    case addEntropy([UInt8])
    case configureNetwork(NetworkConfig)
    case setHostname(String)
    case setGeneration(UInt64)
    case shutdown
    case ping
    /// Version 2: make the guest kernel zero its free memory (after dropping clean page cache
    /// when asked), so a snapshot stores it as nothing; replies `ok`.
    case zeroFreeMemory(dropCaches: Bool)
    /// Version 3: the guest's wall clock now; replies `clock`.
    case readClock
    /// Version 3: moves the guest's wall clock by this much from where it is; replies `ok`.
    /// Relative, so however long the request waits does not change where the clock lands.
    case shiftClock(nanoseconds: Int64)
}

/// Messages the guest agent sends.
public enum GuestMessage: Sendable, Equatable {
    case helloReply(nonce: UInt64, info: GuestInfo)
    case started(pid: Int32)
    case output(StandardStream, [UInt8])
    case exited(ExitStatus)
    case ok
    case fileData([UInt8])
    /// A request failed: the guest's errno (0 if none applies) and what went wrong.
    case failure(errno: Int32, message: String)
    /// Version 3: the guest's `CLOCK_REALTIME` when it read the `readClock` request.
    case clock(unixNanoseconds: Int64)
}

/// A message and the request it belongs to.
public struct Envelope<Message: Sendable>: Sendable {
    public var id: UInt32
    public var message: Message
    public init(id: UInt32, _ message: Message) { self.id = id; self.message = message }
}

extension Envelope: Equatable where Message: Equatable {}
