import CStasis
import Glibc
import Guest

/// One virtio-serial port and the host connection (if any) behind it.
final class Port {
    let name: String
    let fd: Int32
    var connected = false
    var decoder = FrameDecoder()
    private var outbox: [UInt8] = []
    private var outboxStart = 0

    init(name: String, fd: Int32) {
        self.name = name
        self.fd = fd
    }

    /// Bytes queued for the host and not yet written.
    var pending: Int { outbox.count - outboxStart }

    func enqueue(_ frame: [UInt8]) {
        guard connected else { return }
        outbox.append(contentsOf: frame)
        flush()
    }

    /// Writes as much as the port takes without blocking.
    func flush() {
        while pending > 0 {
            let n = outbox.withUnsafeBytes { raw in
                write(fd, raw.baseAddress.map { $0 + outboxStart }, pending)
            }
            if n > 0 {
                outboxStart += n
            } else {
                if n < 0 && POSIX.errno == EINTR { continue }
                break
            }
        }
        if outboxStart == outbox.count {
            outbox.removeAll(keepingCapacity: outbox.capacity <= 4 << 20)
            outboxStart = 0
        }
    }

    /// Drops the connection state: a new host starts from a clean slate.
    func reset(connected: Bool) {
        self.connected = connected
        decoder.reset()
        dropOutbox()
    }

    /// Forgets replies queued for an earlier host.
    func dropOutbox() {
        outbox.removeAll()
        outboxStart = 0
    }
}

/// A process started by `exec`.
final class GuestProcess {
    let port: Int
    let requestID: UInt32
    let pid: pid_t
    /// True while a host waits for its output and exit status.
    var attached: Bool
    var stdinFD: Int32 = -1
    var stdinBuffer: [UInt8] = []
    var stdinCloseRequested = false
    var stdoutFD: Int32 = -1
    var stderrFD: Int32 = -1
    var deadline: UInt64?
    var timedOut = false

    init(port: Int, requestID: UInt32, pid: pid_t, attached: Bool) {
        self.port = port
        self.requestID = requestID
        self.pid = pid
        self.attached = attached
    }
}

/// The agent's event loop: serves every port, runs processes, reaps children (it is PID 1).
final class Agent {
    private var ports: [Port] = []
    private var processes: [pid_t: GuestProcess] = [:]
    /// Output pipes of finished or abandoned processes still held open by their children:
    /// read and discarded so those children never block or die of SIGPIPE.
    private var orphanFDs: Set<Int32> = []
    private let signalFD: Int32
    private var generation: UInt64 = 0
    private var readBuffer = [UInt8](repeating: 0, count: AgentProtocol.maxChunk)
    /// Stop reading a process's output while its port has this much queued.
    private let backpressureLimit = 1 << 20

    init() {
        signal(SIGPIPE, SIG_IGN)
        signalFD = cshim_sigchld_fd()
        if signalFD < 0 { log("signalfd: \(POSIX.describe(POSIX.errno))") }
        ports = Agent.openPorts()
        log("serving \(ports.map(\.name).joined(separator: ","))")
    }

    private func setWallClock(_ port: Int, _ id: UInt32, to ns: Int64) {
        var ts = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
        if clock_settime(CLOCK_REALTIME, &ts) == 0 { reply(port, id, .ok) } else {
            let e = POSIX.errno
            failure(port, id, e, "cannot set the clock: \(POSIX.describe(e))")
        }
    }

    /// Finds the agent's virtio-serial ports by name and opens them.
    private static func openPorts() -> [Port] {
        var found: [Port] = []
        for _ in 0 ..< 2500 {
            var byName: [String: String] = [:]
            for entry in POSIX.listDirectory("/sys/class/virtio-ports") {
                if let name = POSIX.readText("/sys/class/virtio-ports/\(entry)/name") { byName[name] = entry }
            }
            if AgentProtocol.portNames.allSatisfy({ byName[$0] != nil }) {
                for name in AgentProtocol.portNames {
                    guard let dev = byName[name] else { continue }
                    let fd = open("/dev/\(dev)", O_RDWR | O_NONBLOCK | O_CLOEXEC)
                    if fd >= 0 { found.append(Port(name: name, fd: fd)) } else {
                        log("open /dev/\(dev): \(POSIX.describe(POSIX.errno))")
                    }
                }
                return found
            }
            usleep(2000)
        }
        log("agent ports did not appear")
        return found
    }

    func run() -> Never {
        while true {
            pollOnce()
        }
    }

    private enum Source {
        case signals
        case port(Int)
        case stdout(GuestProcess)
        case stderr(GuestProcess)
        case stdin(GuestProcess)
        case orphan(Int32)
    }

    private func pollOnce() {
        var fds: [pollfd] = []
        var sources: [Source] = []
        func add(_ fd: Int32, _ events: Int32, _ source: Source) {
            fds.append(pollfd(fd: fd, events: Int16(events), revents: 0))
            sources.append(source)
        }
        if signalFD >= 0 { add(signalFD, POLLIN, .signals) }
        for (i, port) in ports.enumerated() where port.connected {
            add(port.fd, POLLIN | (port.pending > 0 ? POLLOUT : 0), .port(i))
        }
        for process in processes.values {
            let roomy = !process.attached || ports[process.port].pending < backpressureLimit
            if process.stdoutFD >= 0 && roomy { add(process.stdoutFD, POLLIN, .stdout(process)) }
            if process.stderrFD >= 0 && roomy { add(process.stderrFD, POLLIN, .stderr(process)) }
            if process.stdinFD >= 0 && !process.stdinBuffer.isEmpty { add(process.stdinFD, POLLOUT, .stdin(process)) }
        }
        for fd in orphanFDs { add(fd, POLLIN, .orphan(fd)) }

        // A disconnected port reports POLLHUP until a host connects, so it cannot be waited on:
        // look at those ports again every few milliseconds instead.
        var timeout: Int32 = ports.contains { !$0.connected } ? 5 : -1
        let now = POSIX.nowMilliseconds()
        for process in processes.values {
            guard let deadline = process.deadline, !process.timedOut else { continue }
            let left = deadline > now ? Int32(clamping: deadline - now) : 0
            timeout = timeout < 0 ? left : min(timeout, left)
        }

        let ready = poll(&fds, nfds_t(fds.count), timeout)
        if ready < 0 && POSIX.errno != EINTR { log("poll: \(POSIX.describe(POSIX.errno))") }
        if ready > 0 {
            for (pfd, source) in zip(fds, sources) where pfd.revents != 0 {
                handle(source, revents: Int32(pfd.revents))
            }
        }
        checkDisconnectedPorts()
        enforceTimeouts()
    }

    private func handle(_ source: Source, revents: Int32) {
        switch source {
        case .signals:
            cshim_drain_signalfd(signalFD)
            reapChildren()
        case .port(let i):
            let port = ports[i]
            guard port.connected else { return }
            if revents & POLLIN != 0 { readPort(i) }
            if port.connected && revents & POLLOUT != 0 { port.flush() }
            if port.connected && revents & (POLLHUP | POLLERR) != 0 && revents & POLLIN == 0 { disconnect(i) }
        case .stdout(let process):
            if process.stdoutFD >= 0 { pump(process, .stdout) }
        case .stderr(let process):
            if process.stderrFD >= 0 { pump(process, .stderr) }
        case .stdin(let process):
            feedStdin(process)
        case .orphan(let fd):
            let n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 || (n < 0 && POSIX.errno != EAGAIN && POSIX.errno != EINTR) {
                close(fd)
                orphanFDs.remove(fd)
            }
        }
    }

    private func checkDisconnectedPorts() {
        for (i, port) in ports.enumerated() where !port.connected {
            var pfd = pollfd(fd: port.fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 0) >= 0 && Int32(pfd.revents) & POLLHUP == 0 {
                ports[i].reset(connected: true)
            }
        }
    }

    private func readPort(_ i: Int) {
        let port = ports[i]
        while port.connected {
            let n = readBuffer.withUnsafeMutableBytes { read(port.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                port.decoder.append(readBuffer[0 ..< n])
                while let body = port.decoder.next() {
                    do {
                        let envelope = try Codec.decodeHost(body)
                        handleRequest(port: i, envelope)
                    } catch {
                        log("\(port.name): bad frame: \(error)")
                    }
                }
                if n < readBuffer.count { return }
            } else if n == 0 {
                disconnect(i)
                return
            } else {
                let e = POSIX.errno
                if e == EINTR { continue }
                if e != EAGAIN { disconnect(i) }
                return
            }
        }
    }

    /// The host went away: hang up the processes it was attached to, as a closed terminal does.
    private func disconnect(_ i: Int) {
        ports[i].reset(connected: false)
        detachProcesses(onPort: i, signal: SIGHUP)
    }

    private func detachProcesses(onPort i: Int, signal sig: Int32) {
        for process in processes.values where process.port == i && process.attached {
            process.attached = false
            if process.stdinFD >= 0 { close(process.stdinFD); process.stdinFD = -1 }
            kill(-process.pid, sig)
        }
    }

    private func reply(_ port: Int, _ id: UInt32, _ message: GuestMessage) {
        ports[port].enqueue(Codec.frame(id: id, message))
    }

    private func failure(_ port: Int, _ id: UInt32, _ code: Int32, _ text: String) {
        reply(port, id, .failure(errno: code, message: text))
    }

    // MARK: requests

    private func handleRequest(port: Int, _ envelope: Envelope<HostMessage>) {
        let id = envelope.id
        switch envelope.message {
        case .hello(let nonce, _):
            // A new host on this port: whatever the last one left queued is not for it.
            ports[port].connected = true
            ports[port].dropOutbox()
            ports[port].decoder.markSynchronized()
            detachProcesses(onPort: port, signal: SIGHUP)
            reply(port, id, .helloReply(nonce: nonce, info: info()))
        case .ping:
            reply(port, id, .ok)
        case .zeroFreeMemory(let dropCaches):
            // Blocks this agent for as long as the kernel takes to clear the pages (about a
            // second per few hundred MiB under TCG): asked for by `stasis snapshot --compact`.
            if dropCaches { _ = POSIX.writeFile("/proc/sys/vm/drop_caches", Array("1\n".utf8), mode: 0o644, append: false) }
            let zeroed = POSIX.zeroFreeMemory()
            log("zeroed \(zeroed >> 20) MiB of free memory")
            reply(port, id, .ok)
        case .exec(let request):
            startProcess(port: port, id: id, request)
        case .stdin(let data):
            guard let process = attachedProcess(port, id) else { return }
            process.stdinBuffer.append(contentsOf: data)
            feedStdin(process)
        case .closeStdin:
            guard let process = attachedProcess(port, id) else { return }
            process.stdinCloseRequested = true
            feedStdin(process)
        case .signal(let sig):
            guard let process = attachedProcess(port, id) else {
                failure(port, id, ESRCH, "no running process for request \(id)")
                return
            }
            if kill(-process.pid, sig) != 0 { kill(process.pid, sig) }
        case .readFile(let path):
            let limit = AgentProtocol.maxBodyLength - 64
            guard let data = POSIX.readFile(path, limit: limit + 1) else {
                let e = POSIX.errno
                failure(port, id, e, "cannot read \(path): \(POSIX.describe(e))")
                return
            }
            guard data.count <= limit else {
                failure(port, id, EFBIG, "\(path) is larger than \(limit) bytes; read it with exec")
                return
            }
            reply(port, id, .fileData(data))
        case .writeFile(let path, let mode, let data, let append):
            let e = POSIX.writeFile(path, data, mode: mode, append: append)
            if e == 0 { reply(port, id, .ok) } else { failure(port, id, e, "cannot write \(path): \(POSIX.describe(e))") }
        case .setClock(let ns):
            setWallClock(port, id, to: ns)
        case .readClock:
            reply(port, id, .clock(unixNanoseconds: WallClock.nanoseconds()))
        case .shiftClock(let ns):
            // Read and set back to back, so the shift lands exactly whenever the request arrived.
            setWallClock(port, id, to: WallClock.nanoseconds() &+ ns)
        case .addEntropy(let bytes):
            if cshim_add_entropy_and_reseed(bytes, bytes.count) == 0 { reply(port, id, .ok) } else {
                let e = POSIX.errno
                failure(port, id, e, "cannot reseed the RNG: \(POSIX.describe(e))")
            }
        case .configureNetwork(let c):
            let settings = NetworkSettings(interface: c.interface, address: c.address, prefixLength: c.prefixLength,
                                           gateway: c.gateway, nameservers: c.nameservers)
            if let err = Network.configure(settings) { failure(port, id, POSIX.errno, err) } else { reply(port, id, .ok) }
        case .setHostname(let name):
            Boot.setHostname(name)
            reply(port, id, .ok)
        case .setGeneration(let value):
            generation = value
            _ = POSIX.writeFile("/run/stasis/generation", Array("\(value)\n".utf8), mode: 0o644, append: false)
            runRestoreHooks(port: port, generation: value)
            reply(port, id, .ok)
        case .shutdown:
            reply(port, id, .ok)
            shutdown()
        }
    }

    private func attachedProcess(_ port: Int, _ id: UInt32) -> GuestProcess? {
        processes.values.first { $0.port == port && $0.requestID == id && $0.attached }
    }

    private func info() -> GuestInfo {
        GuestInfo(agentVersion: AgentProtocol.version, kernelRelease: POSIX.kernelRelease(), hostname: POSIX.hostname(),
                  uptimeNanoseconds: POSIX.uptimeNanoseconds(), generation: generation)
    }

    // MARK: processes

    /// Every executable in /etc/stasis/restored.d runs (in name order, in the background, output
    /// to the console) when the host announces a new generation: after each restore and fork, so
    /// that guest programs can rotate identities, reconnect or reseed their own generators.
    private func runRestoreHooks(port: Int, generation: UInt64) {
        let folder = "/etc/stasis/restored.d"
        for name in POSIX.listDirectory(folder) where !name.hasPrefix(".") {
            let path = "\(folder)/\(name)"
            guard access(path, X_OK) == 0 else { continue }
            startProcess(port: port, id: 0, ExecRequest(argv: [path], environment: ["STASIS_GENERATION=\(generation)"],
                                                        detach: true, outputPath: "/dev/console"), announce: false)
        }
    }

    private func startProcess(port: Int, id: UInt32, _ request: ExecRequest, announce: Bool = true) {
        guard !request.argv.isEmpty else { return failure(port, id, EINVAL, "no command given") }
        guard let user = GuestUser.resolve(request.user) else {
            return failure(port, id, ENOENT, "no user '\(request.user)' in the guest's /etc/passwd")
        }
        var env: [(String, String)] = [
            ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("HOME", user.home), ("USER", user.name), ("LOGNAME", user.name),
            ("HOSTNAME", POSIX.hostname()), ("LANG", "C.UTF-8"), ("TERM", "xterm"),
        ]
        for entry in request.environment {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0]), value = parts.count > 1 ? String(parts[1]) : ""
            if let i = env.firstIndex(where: { $0.0 == key }) { env[i].1 = value } else { env.append((key, value)) }
        }
        let cwd = request.workingDirectory.isEmpty ? (POSIX.exists(user.home) ? user.home : "/") : request.workingDirectory

        var childFDs: [Int32] = []
        var parentFDs: (stdin: Int32, stdout: Int32, stderr: Int32) = (-1, -1, -1)
        func closeAll() { for fd in childFDs + [parentFDs.stdin, parentFDs.stdout, parentFDs.stderr] where fd >= 0 { close(fd) } }
        func pipePair() -> (Int32, Int32)? {
            var p: [Int32] = [-1, -1]
            guard cshim_pipe_cloexec(&p) == 0 else { return nil }
            return (p[0], p[1])
        }
        let inFD: Int32, outFD: Int32, errFD: Int32
        if request.stdin && !request.detach {
            guard let (r, w) = pipePair() else { return failure(port, id, POSIX.errno, "pipe: \(POSIX.describe(POSIX.errno))") }
            childFDs.append(r); parentFDs.stdin = w; inFD = r
        } else {
            inFD = open("/dev/null", O_RDONLY | O_CLOEXEC); childFDs.append(inFD)
        }
        if request.detach {
            let path = request.outputPath.isEmpty ? "/dev/null" : request.outputPath
            outFD = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard outFD >= 0 else {
                let e = POSIX.errno
                closeAll()
                return failure(port, id, e, "cannot open \(path): \(POSIX.describe(e))")
            }
            childFDs.append(outFD); errFD = outFD
        } else {
            guard let (r1, w1) = pipePair(), let (r2, w2) = pipePair() else {
                let e = POSIX.errno
                closeAll()
                return failure(port, id, e, "pipe: \(POSIX.describe(e))")
            }
            childFDs += [w1, w2]; parentFDs.stdout = r1; parentFDs.stderr = r2
            outFD = w1; errFD = w2
        }

        let argv = request.argv.map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.0)=\($0.1)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var spawnErrno: Int32 = 0
        let pid = cshim_spawn(argv, envp, cwd, user.uid == 0 && request.user.isEmpty ? -1 : user.uid,
                              user.uid == 0 && request.user.isEmpty ? -1 : user.gid, inFD, outFD, errFD, &spawnErrno)
        for fd in childFDs { close(fd) }
        childFDs = []
        guard pid > 0 else {
            closeAll()
            return failure(port, id, spawnErrno, "cannot run \(request.argv[0]): \(POSIX.describe(spawnErrno))")
        }
        let process = GuestProcess(port: port, requestID: id, pid: pid, attached: !request.detach)
        for fd in [parentFDs.stdin, parentFDs.stdout, parentFDs.stderr] where fd >= 0 { _ = cshim_set_nonblocking(fd) }
        process.stdinFD = parentFDs.stdin
        process.stdoutFD = parentFDs.stdout
        process.stderrFD = parentFDs.stderr
        if request.timeoutMilliseconds > 0 { process.deadline = POSIX.nowMilliseconds() + request.timeoutMilliseconds }
        processes[pid] = process
        if announce { reply(port, id, .started(pid: pid)) }
    }

    /// Moves one chunk of a process's output to its host.
    private func pump(_ process: GuestProcess, _ stream: StandardStream) {
        let fd = stream == .stdout ? process.stdoutFD : process.stderrFD
        let n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            if process.attached { reply(process.port, process.requestID, .output(stream, Array(readBuffer[0 ..< n]))) }
        } else if n == 0 || (POSIX.errno != EAGAIN && POSIX.errno != EINTR) {
            close(fd)
            if stream == .stdout { process.stdoutFD = -1 } else { process.stderrFD = -1 }
        }
    }

    private func feedStdin(_ process: GuestProcess) {
        guard process.stdinFD >= 0 else { return }
        while !process.stdinBuffer.isEmpty {
            let n = process.stdinBuffer.withUnsafeBytes { write(process.stdinFD, $0.baseAddress, $0.count) }
            if n > 0 {
                process.stdinBuffer.removeFirst(n)
            } else if n < 0 && POSIX.errno == EINTR {
                continue
            } else if n < 0 && POSIX.errno == EAGAIN {
                return
            } else {
                process.stdinBuffer.removeAll()  // the process closed its stdin
                break
            }
        }
        if process.stdinCloseRequested {
            close(process.stdinFD)
            process.stdinFD = -1
        }
    }

    private func reapChildren() {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { return }
            guard let process = processes.removeValue(forKey: pid) else { continue }
            let exit = cshim_wifexited(status) != 0
                ? ExitStatus(code: cshim_wexitstatus(status), timedOut: process.timedOut)
                : ExitStatus(signal: cshim_wtermsig(status), timedOut: process.timedOut)
            finish(process, exit)
        }
    }

    /// Sends what the process wrote before it exited, then its exit status.
    private func finish(_ process: GuestProcess, _ status: ExitStatus) {
        for stream in [StandardStream.stdout, .stderr] {
            while (stream == .stdout ? process.stdoutFD : process.stderrFD) >= 0 {
                let fd = stream == .stdout ? process.stdoutFD : process.stderrFD
                let n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    if process.attached { reply(process.port, process.requestID, .output(stream, Array(readBuffer[0 ..< n]))) }
                    continue
                }
                if n < 0 && POSIX.errno == EINTR { continue }
                if n < 0 && POSIX.errno == EAGAIN {
                    orphanFDs.insert(fd)  // a child of the process still holds the pipe
                } else {
                    close(fd)
                }
                if stream == .stdout { process.stdoutFD = -1 } else { process.stderrFD = -1 }
            }
        }
        if process.stdinFD >= 0 { close(process.stdinFD); process.stdinFD = -1 }
        if process.attached { reply(process.port, process.requestID, .exited(status)) }
    }

    private func enforceTimeouts() {
        let now = POSIX.nowMilliseconds()
        for process in processes.values {
            guard let deadline = process.deadline, !process.timedOut, now >= deadline else { continue }
            process.timedOut = true
            kill(-process.pid, SIGKILL)
            kill(process.pid, SIGKILL)
        }
    }

    private func shutdown() -> Never {
        for port in ports where port.connected {
            var spins = 0
            while port.pending > 0 && spins < 200 { port.flush(); usleep(1000); spins += 1 }
        }
        log("shutting down")
        kill(-1, SIGTERM)
        sync()
        _ = cshim_mount(nil, "/", nil, UInt(MS_REMOUNT | MS_RDONLY), nil)
        _ = cshim_poweroff()
        while true { pause() }
    }
}
