/// Turns messages into frames and back.
public enum Codec {
    /// A complete frame (magic, length, body) for `message`.
    public static func frame(id: UInt32, _ message: HostMessage) -> [UInt8] {
        var w = WireWriter()
        encode(message, into: &w)
        return wrap(id: id, kind: message.kind, body: w.bytes)
    }

    /// A complete frame (magic, length, body) for `message`.
    public static func frame(id: UInt32, _ message: GuestMessage) -> [UInt8] {
        var w = WireWriter()
        encode(message, into: &w)
        return wrap(id: id, kind: message.kind, body: w.bytes)
    }

    private static func wrap(id: UInt32, kind: UInt8, body: [UInt8]) -> [UInt8] {
        var w = WireWriter(capacity: body.count + 17)
        for b in AgentProtocol.magic { w.u8(b) }
        w.u32(UInt32(body.count + 5))
        w.u8(kind)
        w.u32(id)
        var out = w.bytes
        out.append(contentsOf: body)
        // The CRC covers the length, kind, id and fields: everything after the magic.
        let crc = CRC32.checksum(out[4...])
        withUnsafeBytes(of: crc.littleEndian) { out.append(contentsOf: $0) }
        return out
    }

    /// Decodes a frame body (kind, id, fields) sent by the host.
    public static func decodeHost(_ body: [UInt8]) throws(ProtocolError) -> Envelope<HostMessage> {
        var r = WireReader(body)
        let kind = try r.u8()
        let id = try r.u32()
        let message: HostMessage
        switch kind {
        case 1: message = .hello(nonce: try r.u64(), version: try r.u16())
        case 2:
            message = .exec(ExecRequest(
                argv: try r.strings(), environment: try r.strings(), workingDirectory: try r.string(),
                user: try r.string(), stdin: try r.bool(), timeoutMilliseconds: try r.u64(),
                detach: try r.bool(), outputPath: try r.string()))
        case 3: message = .stdin(try r.data())
        case 4: message = .closeStdin
        case 5: message = .signal(try r.i32())
        case 6: message = .readFile(path: try r.string())
        case 7: message = .writeFile(path: try r.string(), mode: try r.u32(), data: try r.data(), append: try r.bool())
        case 8: message = .setClock(unixNanoseconds: try r.i64())
        case 9: message = .addEntropy(try r.data())
        case 10:
            message = .configureNetwork(NetworkConfig(
                interface: try r.string(), address: try r.string(), prefixLength: try r.u8(),
                gateway: try r.string(), nameservers: try r.strings()))
        case 11: message = .setHostname(try r.string())
        case 12: message = .setGeneration(try r.u64())
        case 13: message = .shutdown
        case 14: message = .ping
        case 15: message = .zeroFreeMemory(dropCaches: try r.bool())
        case 16: message = .readClock
        case 17: message = .shiftClock(nanoseconds: try r.i64())
        default: throw ProtocolError.unknownKind(kind)
        }
        guard r.remaining == 0 else { throw ProtocolError.trailingBytes(r.remaining) }
        return Envelope(id: id, message)
    }

    /// Decodes a frame body (kind, id, fields) sent by the guest.
    public static func decodeGuest(_ body: [UInt8]) throws(ProtocolError) -> Envelope<GuestMessage> {
        var r = WireReader(body)
        let kind = try r.u8()
        let id = try r.u32()
        let message: GuestMessage
        switch kind {
        case 0x81:
            message = .helloReply(nonce: try r.u64(), info: GuestInfo(
                agentVersion: try r.u16(), kernelRelease: try r.string(), hostname: try r.string(),
                uptimeNanoseconds: try r.u64(), generation: try r.u64()))
        case 0x82: message = .started(pid: try r.i32())
        case 0x83:
            guard let stream = StandardStream(rawValue: try r.u8()) else { throw ProtocolError.unknownKind(kind) }
            message = .output(stream, try r.data())
        case 0x84:
            let hasCode = try r.bool()
            let value = try r.i32()
            let timedOut = try r.bool()
            message = .exited(hasCode ? ExitStatus(code: value, timedOut: timedOut) : ExitStatus(signal: value, timedOut: timedOut))
        case 0x85: message = .ok
        case 0x86: message = .fileData(try r.data())
        case 0x87: message = .failure(errno: try r.i32(), message: try r.string())
        case 0x88: message = .clock(unixNanoseconds: try r.i64())
        default: throw ProtocolError.unknownKind(kind)
        }
        guard r.remaining == 0 else { throw ProtocolError.trailingBytes(r.remaining) }
        return Envelope(id: id, message)
    }

    private static func encode(_ message: HostMessage, into w: inout WireWriter) {
        switch message {
        case .hello(let nonce, let version): w.u64(nonce); w.u16(version)
        case .exec(let e):
            w.strings(e.argv); w.strings(e.environment); w.string(e.workingDirectory); w.string(e.user)
            w.bool(e.stdin); w.u64(e.timeoutMilliseconds); w.bool(e.detach); w.string(e.outputPath)
        case .stdin(let data): w.data(data)
        case .closeStdin, .shutdown, .ping, .readClock: break
        case .zeroFreeMemory(let dropCaches): w.bool(dropCaches)
        case .signal(let s): w.i32(s)
        case .readFile(let path): w.string(path)
        case .writeFile(let path, let mode, let data, let append): w.string(path); w.u32(mode); w.data(data); w.bool(append)
        case .setClock(let ns): w.i64(ns)
        case .shiftClock(let ns): w.i64(ns)
        case .addEntropy(let data): w.data(data)
        case .configureNetwork(let n):
            w.string(n.interface); w.string(n.address); w.u8(n.prefixLength); w.string(n.gateway); w.strings(n.nameservers)
        case .setHostname(let name): w.string(name)
        case .setGeneration(let g): w.u64(g)
        }
    }

    private static func encode(_ message: GuestMessage, into w: inout WireWriter) {
        switch message {
        case .helloReply(let nonce, let info):
            w.u64(nonce); w.u16(info.agentVersion); w.string(info.kernelRelease); w.string(info.hostname)
            w.u64(info.uptimeNanoseconds); w.u64(info.generation)
        case .started(let pid): w.i32(pid)
        case .output(let stream, let data): w.u8(stream.rawValue); w.data(data)
        case .exited(let status):
            w.bool(status.code != nil); w.i32(status.code ?? status.signal ?? 0); w.bool(status.timedOut)
        case .ok: break
        case .fileData(let data): w.data(data)
        case .failure(let errno, let message): w.i32(errno); w.string(message)
        case .clock(let ns): w.i64(ns)
        }
    }
}

extension HostMessage {
    var kind: UInt8 {
        switch self {
        case .hello: 1
        case .exec: 2
        case .stdin: 3
        case .closeStdin: 4
        case .signal: 5
        case .readFile: 6
        case .writeFile: 7
        case .setClock: 8
        case .addEntropy: 9
        case .configureNetwork: 10
        case .setHostname: 11
        case .setGeneration: 12
        case .shutdown: 13
        case .ping: 14
        case .zeroFreeMemory: 15
        case .readClock: 16
        case .shiftClock: 17
        }
    }
}

extension GuestMessage {
    var kind: UInt8 {
        switch self {
        case .helloReply: 0x81
        case .started: 0x82
        case .output: 0x83
        case .exited: 0x84
        case .ok: 0x85
        case .fileData: 0x86
        case .failure: 0x87
        case .clock: 0x88
        }
    }
}
