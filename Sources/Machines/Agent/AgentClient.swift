import Foundation
import Guest
import NIOCore
import NIOPosix
import StasisCore

/// Something that happened to a process started with `exec`.
public enum ExecEvent: Sendable, Equatable {
    case started(pid: Int32)
    case output(StandardStream, [UInt8])
    case exited(ExitStatus)
}

/// One connection to the guest agent over one of its virtio-serial ports. Requests are
/// multiplexed by id; `exec` streams its events. Use it inside `AgentClient.connect`'s scope.
public actor AgentClient {
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var nextID: UInt32 = 1
    private var replies: [UInt32: CheckedContinuation<GuestMessage, any Error>] = [:]
    private var execs: [UInt32: AsyncThrowingStream<ExecEvent, any Error>.Continuation] = [:]
    /// Execs started with `detach`: their stream ends at `.started`.
    private var detached: Set<UInt32> = []
    private var helloWaiter: (nonce: UInt64, continuation: CheckedContinuation<GuestInfo, any Error>)?
    private var closedError: StasisError?
    /// What the agent said about the guest when we connected.
    public private(set) var guestInfo: GuestInfo?

    init(outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        self.outbound = outbound
    }

    /// Connects to the agent behind `socketPath`, says hello (retrying until the guest answers
    /// or `timeout` passes), runs `body`, then closes the connection.
    public static func connect<R: Sendable>(
        socketPath: String,
        timeout: Duration = .seconds(60),
        isAlive: @escaping @Sendable () -> Bool = { true },
        _ body: @Sendable (AgentClient) async throws -> R
    ) async throws -> R {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>?
        while channel == nil {
            do {
                channel = try await UnixSocket.connect(socketPath)
            } catch {
                guard clock.now < deadline, isAlive() else {
                    throw StasisError(.guestFailure, "cannot connect to the guest agent at \(socketPath)", cause: error)
                }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        guard let channel else { throw StasisError(.internalError, "unreachable") }
        return try await channel.executeThenClose { inbound, outbound in
            let client = AgentClient(outbound: outbound)
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    await client.readLoop(inbound)
                }
                do {
                    try await client.handshake(deadline: deadline, isAlive: isAlive)
                    let result = try await body(client)
                    group.cancelAll()
                    outbound.finish()
                    return result
                } catch {
                    group.cancelAll()
                    outbound.finish()
                    throw error
                }
            }
        }
    }

    private func readLoop(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) async {
        var decoder = FrameDecoder()
        do {
            for try await buffer in inbound {
                decoder.append(buffer.readableBytesView)
                while let body = decoder.next() {
                    guard let envelope = try? Codec.decodeGuest(body) else { continue }
                    dispatch(envelope)
                    if guestInfo != nil { decoder.markSynchronized() }
                }
            }
            fail(StasisError(.guestFailure, "the guest agent closed the connection (did the machine stop?)"))
        } catch {
            fail(StasisError(.guestFailure, "connection to the guest agent failed", cause: error))
        }
    }

    private func dispatch(_ envelope: Envelope<GuestMessage>) {
        if case .helloReply(let nonce, let info) = envelope.message {
            if let waiter = helloWaiter, waiter.nonce == nonce {
                helloWaiter = nil
                guestInfo = info
                waiter.continuation.resume(returning: info)
            }
            return
        }
        guard guestInfo != nil else { return }  // stale bytes from an earlier connection
        if let stream = execs[envelope.id] {
            switch envelope.message {
            case .started(let pid):
                stream.yield(.started(pid: pid))
                if detached.remove(envelope.id) != nil {
                    stream.finish()
                    execs[envelope.id] = nil
                }
            case .output(let s, let data): stream.yield(.output(s, data))
            case .exited(let status):
                stream.yield(.exited(status))
                stream.finish()
                execs[envelope.id] = nil
            case .failure(let code, let message):
                stream.finish(throwing: StasisError(.guestFailure, message, cause: Errno(code)))
                execs[envelope.id] = nil
            default: break
            }
            return
        }
        if let reply = replies.removeValue(forKey: envelope.id) {
            reply.resume(returning: envelope.message)
        }
    }

    private func fail(_ error: StasisError) {
        closedError = error
        helloWaiter?.continuation.resume(throwing: error)
        helloWaiter = nil
        for (_, r) in replies { r.resume(throwing: error) }
        replies = [:]
        for (_, s) in execs { s.finish(throwing: error) }
        execs = [:]
    }

    private func send(_ id: UInt32, _ message: HostMessage) async throws {
        if let closedError { throw closedError }
        do {
            try await outbound.write(ByteBuffer(bytes: Codec.frame(id: id, message)))
        } catch {
            throw StasisError(.guestFailure, "cannot write to the guest agent", cause: error)
        }
    }

    private func allocateID() -> UInt32 {
        defer { nextID = nextID &+ 1 == 0 ? 1 : nextID &+ 1 }
        return nextID
    }

    /// Says hello until the agent answers with our nonce: before the guest has opened its port,
    /// QEMU drops what we write.
    private func handshake(deadline: ContinuousClock.Instant, isAlive: @escaping @Sendable () -> Bool) async throws {
        let nonce = UInt64.random(in: 1 ... .max)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.waitForHello(nonce) }
            group.addTask {
                let clock = ContinuousClock()
                var interval = Duration.milliseconds(20)
                while true {
                    try await self.send(0, .hello(nonce: nonce, version: AgentProtocol.version))
                    try await Task.sleep(for: interval)
                    interval = min(interval * 2, .milliseconds(250))
                    if clock.now >= deadline {
                        throw StasisError(.timeout, "the guest agent did not answer in time (see the console log)")
                    }
                    if !isAlive() { throw StasisError(.guestFailure, "the machine's QEMU process exited (see the console log)") }
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private func waitForHello(_ nonce: UInt64) async throws {
        try await withTaskCancellationHandler {
            _ = try await withCheckedThrowingContinuation { (c: CheckedContinuation<GuestInfo, any Error>) in
                if let closedError {
                    c.resume(throwing: closedError)
                } else if Task.isCancelled {
                    c.resume(throwing: CancellationError())
                } else {
                    helloWaiter = (nonce, c)
                }
            }
        } onCancel: {
            Task { await self.cancelHello() }
        }
    }

    private func cancelHello() {
        helloWaiter?.continuation.resume(throwing: CancellationError())
        helloWaiter = nil
    }

    /// Sends a request and waits for its single reply.
    func request(_ message: HostMessage) async throws -> GuestMessage {
        let id = allocateID()
        return try await withCheckedThrowingContinuation { c in
            replies[id] = c
            Task {
                do { try await self.send(id, message) } catch { self.failRequest(id, error) }
            }
        }
    }

    private func failRequest(_ id: UInt32, _ error: any Error) {
        replies.removeValue(forKey: id)?.resume(throwing: error)
    }

    func expectOK(_ message: HostMessage, _ what: String) async throws {
        switch try await request(message) {
        case .ok: return
        case .failure(let code, let text): throw StasisError(.guestFailure, text, cause: Errno(code))
        default: throw StasisError(.protocolError, "unexpected reply to \(what)")
        }
    }

    /// Round trip with no work in the guest.
    public func ping() async throws { try await expectOK(.ping, "ping") }

    /// Starts a process; its events arrive on the returned stream, which ends after `.exited`
    /// (after `.started` for a detached one).
    /// Use the id with `writeStdin`, `closeStdin` and `signal`.
    public func exec(_ request: ExecRequest) async throws -> (id: UInt32, events: AsyncThrowingStream<ExecEvent, any Error>) {
        if let closedError { throw closedError }
        let id = allocateID()
        let (stream, continuation) = AsyncThrowingStream<ExecEvent, any Error>.makeStream()
        execs[id] = continuation
        if request.detach { detached.insert(id) }
        try await send(id, .exec(request))
        return (id, stream)
    }

    /// Starts a detached process (it outlives this connection) and returns its guest pid.
    public func spawn(_ request: ExecRequest) async throws -> Int32 {
        var detachedRequest = request
        detachedRequest.detach = true
        let (_, events) = try await exec(detachedRequest)
        for try await event in events {
            if case .started(let pid) = event { return pid }
        }
        throw StasisError(.guestFailure, "the guest agent did not report the process as started")
    }

    /// Runs a command to completion and collects its output.
    public func run(_ request: ExecRequest) async throws -> (status: ExitStatus, stdout: [UInt8], stderr: [UInt8]) {
        let (_, events) = try await exec(request)
        var out: [UInt8] = [], err: [UInt8] = []
        for try await event in events {
            switch event {
            case .output(.stdout, let data): out += data
            case .output(.stderr, let data): err += data
            case .exited(let status): return (status, out, err)
            case .started: continue
            }
        }
        throw StasisError(.guestFailure, "the process's events ended without an exit status")
    }

    /// Sends bytes to a running process's standard input.
    public func writeStdin(_ id: UInt32, _ bytes: [UInt8]) async throws {
        var offset = 0
        repeat {
            let end = min(offset + AgentProtocol.maxChunk, bytes.count)
            try await send(id, .stdin(Array(bytes[offset ..< end])))
            offset = end
        } while offset < bytes.count
    }

    /// Closes a running process's standard input once everything sent has been written.
    public func closeStdin(_ id: UInt32) async throws { try await send(id, .closeStdin) }

    /// Sends a signal to a running process's group.
    public func signal(_ id: UInt32, _ signal: Int32) async throws { try await send(id, .signal(signal)) }

    /// Reads a guest file (up to 8 MiB).
    public func readFile(_ path: String) async throws -> [UInt8] {
        switch try await request(.readFile(path: path)) {
        case .fileData(let data): return data
        case .failure(let code, let text): throw StasisError(code == ENOENT ? .notFound : .guestFailure, text, cause: Errno(code))
        default: throw StasisError(.protocolError, "unexpected reply to readFile")
        }
    }

    /// Writes a guest file.
    public func writeFile(_ path: String, _ data: [UInt8], mode: UInt32 = 0o644, append: Bool = false) async throws {
        try await expectOK(.writeFile(path: path, mode: mode, data: data, append: append), "writeFile")
    }

    /// Mixes fresh host randomness into the guest kernel's RNG and reseeds it.
    public func reseedRandom() async throws {
        let bytes = (0 ..< 64).map { _ in UInt8.random(in: 0 ... 255) }
        try await expectOK(.addEntropy(bytes), "addEntropy")
    }

    /// Makes the guest kernel zero its free memory (dropping clean page cache first with
    /// `dropCaches`), so a snapshot taken next stores it as nothing. Needs agent protocol 2.
    public func zeroFreeMemory(dropCaches: Bool) async throws {
        try requireProtocol(2, for: "zeroing free memory")
        try await expectOK(.zeroFreeMemory(dropCaches: dropCaches), "zeroFreeMemory")
    }

    /// Sets the guest's hostname.
    public func setHostname(_ name: String) async throws { try await expectOK(.setHostname(name), "setHostname") }

    /// Applies static network settings in the guest.
    public func configureNetwork(_ config: NetworkConfig) async throws {
        try await expectOK(.configureNetwork(config), "configureNetwork")
    }

    /// Records a new generation (bumped after every restore) in the guest.
    public func setGeneration(_ value: UInt64) async throws { try await expectOK(.setGeneration(value), "setGeneration") }

    /// Asks the guest to sync its disks and power off.
    public func shutdown() async throws { try await expectOK(.shutdown, "shutdown") }
}
