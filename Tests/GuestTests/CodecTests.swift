import Foundation
import Guest
import Testing

/// The host↔guest protocol: codec, frame decoder, fuzzing. Run with `--filter CodecTests`.
enum CodecTests {}

// MARK: - Helpers

/// A small, fast, seedable generator (Steele, Lea & Flood's SplitMix64), so that every random
/// input below can be rebuilt from the seed printed in a failure message.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        (0 ..< count).map { _ in UInt8.random(in: 0 ... 255, using: &self) }
    }
}

/// Deterministic pseudo-random payloads.
func payload(_ count: Int, seed: UInt64 = 42) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return rng.bytes(count)
}

/// A message and a short name for it, so test output does not print 64 KiB arrays.
struct HostCase: Sendable, CustomTestStringConvertible {
    let name: String
    let message: HostMessage
    var testDescription: String { name }
}

struct GuestCase: Sendable, CustomTestStringConvertible {
    let name: String
    let message: GuestMessage
    var testDescription: String { name }
}

let hostCases: [HostCase] = [
    HostCase(name: "hello max", message: .hello(nonce: .max, version: AgentProtocol.version)),
    HostCase(name: "hello zero", message: .hello(nonce: 0, version: 0)),
    HostCase(name: "exec full", message: .exec(ExecRequest(
        argv: ["sh", "-c", "echo héllo 🌍 && printf '%s' \"$X\""], environment: ["X=日本語", "EMPTY=", "A=1"],
        workingDirectory: "/tmp/ünïcødé", user: "nobody", stdin: true, timeoutMilliseconds: .max,
        detach: true, outputPath: "/var/log/out put.log"))),
    HostCase(name: "exec minimal", message: .exec(ExecRequest(argv: []))),
    HostCase(name: "exec empty strings", message: .exec(ExecRequest(argv: ["", ""], environment: [""], user: "1000:1000"))),
    HostCase(name: "stdin empty", message: .stdin([])),
    HostCase(name: "stdin 64 KiB", message: .stdin(payload(AgentProtocol.maxChunk))),
    HostCase(name: "stdin text", message: .stdin(Array("línea\n".utf8))),
    HostCase(name: "closeStdin", message: .closeStdin),
    HostCase(name: "signal 9", message: .signal(9)),
    HostCase(name: "signal min", message: .signal(.min)),
    HostCase(name: "signal -1", message: .signal(-1)),
    HostCase(name: "readFile", message: .readFile(path: "/etc/ðøç/☃.txt")),
    HostCase(name: "readFile empty", message: .readFile(path: "")),
    HostCase(name: "writeFile 64 KiB append", message: .writeFile(path: "/root/f", mode: 0o755, data: payload(65536, seed: 7), append: true)),
    HostCase(name: "writeFile empty", message: .writeFile(path: "", mode: 0, data: [], append: false)),
    HostCase(name: "writeFile max mode", message: .writeFile(path: "/x", mode: .max, data: [0], append: false)),
    HostCase(name: "setClock now", message: .setClock(unixNanoseconds: 1_700_000_000_123_456_789)),
    HostCase(name: "setClock min", message: .setClock(unixNanoseconds: .min)),
    HostCase(name: "setClock -1", message: .setClock(unixNanoseconds: -1)),
    HostCase(name: "addEntropy 256", message: .addEntropy(payload(256, seed: 9))),
    HostCase(name: "addEntropy empty", message: .addEntropy([])),
    HostCase(name: "configureNetwork", message: .configureNetwork(NetworkConfig(
        address: "10.0.2.15", prefixLength: 24, gateway: "10.0.2.2", nameservers: ["10.0.2.3", "1.1.1.1"]))),
    HostCase(name: "configureNetwork bare", message: .configureNetwork(NetworkConfig(
        interface: "ens3", address: "", prefixLength: 255, gateway: "", nameservers: []))),
    HostCase(name: "setHostname", message: .setHostname("höst-名前")),
    HostCase(name: "setHostname empty", message: .setHostname("")),
    HostCase(name: "setGeneration 0", message: .setGeneration(0)),
    HostCase(name: "setGeneration max", message: .setGeneration(.max)),
    HostCase(name: "shutdown", message: .shutdown),
    HostCase(name: "ping", message: .ping),
    HostCase(name: "zeroFreeMemory", message: .zeroFreeMemory(dropCaches: true)),
    HostCase(name: "zeroFreeMemory, caches kept", message: .zeroFreeMemory(dropCaches: false)),
    HostCase(name: "readClock", message: .readClock),
    HostCase(name: "shiftClock back", message: .shiftClock(nanoseconds: -86_400_123_456_789)),
    HostCase(name: "shiftClock max", message: .shiftClock(nanoseconds: .max)),
]

let guestCases: [GuestCase] = [
    GuestCase(name: "helloReply", message: .helloReply(nonce: 0xDEAD_BEEF_CAFE_F00D, info: GuestInfo(
        agentVersion: AgentProtocol.version, kernelRelease: "6.1.0-28-cloud-amd64 ✓", hostname: "wísé-ötter-42",
        uptimeNanoseconds: .max, generation: 3))),
    GuestCase(name: "helloReply empty", message: .helloReply(nonce: 0, info: GuestInfo(
        agentVersion: 0, kernelRelease: "", hostname: "", uptimeNanoseconds: 0, generation: 0))),
    GuestCase(name: "started 1", message: .started(pid: 1)),
    GuestCase(name: "started max", message: .started(pid: .max)),
    GuestCase(name: "started -1", message: .started(pid: -1)),
    GuestCase(name: "stdout empty", message: .output(.stdout, [])),
    GuestCase(name: "stdout text", message: .output(.stdout, Array("héllo 🌍\n".utf8))),
    GuestCase(name: "stderr 64 KiB", message: .output(.stderr, payload(AgentProtocol.maxChunk, seed: 3))),
    GuestCase(name: "exited code 0", message: .exited(ExitStatus(code: 0))),
    GuestCase(name: "exited code 255", message: .exited(ExitStatus(code: 255))),
    GuestCase(name: "exited code -1", message: .exited(ExitStatus(code: -1))),
    GuestCase(name: "exited signal 9", message: .exited(ExitStatus(signal: 9))),
    GuestCase(name: "exited signal 15 timed out", message: .exited(ExitStatus(signal: 15, timedOut: true))),
    GuestCase(name: "exited code 124 timed out", message: .exited(ExitStatus(code: 124, timedOut: true))),
    GuestCase(name: "ok", message: .ok),
    GuestCase(name: "fileData empty", message: .fileData([])),
    GuestCase(name: "fileData 64 KiB", message: .fileData(payload(65536, seed: 11))),
    GuestCase(name: "failure", message: .failure(errno: 2, message: "no such file: /tmp/☃")),
    GuestCase(name: "failure empty", message: .failure(errno: 0, message: "")),
    GuestCase(name: "failure min errno", message: .failure(errno: .min, message: "x")),
    GuestCase(name: "clock", message: .clock(unixNanoseconds: 1_795_872_450_987_654_321)),
    GuestCase(name: "clock before the epoch", message: .clock(unixNanoseconds: -1)),
]

/// Small cases: cheap enough to cut at every byte.
let smallHostCases = hostCases.filter { Codec.frame(id: 1, $0.message).count < 1024 }
let smallGuestCases = guestCases.filter { Codec.frame(id: 1, $0.message).count < 1024 }

/// Feeds `bytes` to a fresh decoder and returns every body it yields.
func bodies(of bytes: [UInt8], chunk: Int = .max) -> [[UInt8]] {
    var decoder = FrameDecoder()
    var out: [[UInt8]] = []
    var i = 0
    while i < bytes.count {
        let end = min(bytes.count, i + chunk)
        decoder.append(bytes[i ..< end])
        while let body = decoder.next() { out.append(body) }
        i = end
    }
    return out
}

/// The body of a frame (everything after magic and length).
func body(of frame: [UInt8]) -> [UInt8] { Array(frame.dropFirst(8).dropLast(4)) }

func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

// MARK: - Round trips

extension CodecTests {
    @Suite struct CodecRoundTripTests {
        @Test(arguments: hostCases)
        func hostMessageRoundTrips(_ c: HostCase) throws {
            for id: UInt32 in [0, 1, 0xFFFF_FFFF] {
                let frame = Codec.frame(id: id, c.message)
                #expect(Array(frame.prefix(4)) == AgentProtocol.magic)
                #expect(Array(frame[4 ..< 8]) == le32(UInt32(frame.count - 12)), "length field counts the body, not the CRC")
                #expect(Array(frame.suffix(4)) == le32(CRC32.checksum(frame[4 ..< frame.count - 4])), "CRC-32 trailer")
                let got = bodies(of: frame)
                try #require(got.count == 1)
                #expect(got[0] == body(of: frame))
                #expect(try Codec.decodeHost(got[0]) == Envelope(id: id, c.message))
            }
        }

        @Test(arguments: guestCases)
        func guestMessageRoundTrips(_ c: GuestCase) throws {
            for id: UInt32 in [0, 1, 0xFFFF_FFFF] {
                let frame = Codec.frame(id: id, c.message)
                #expect(Array(frame.prefix(4)) == AgentProtocol.magic)
                #expect(Array(frame[4 ..< 8]) == le32(UInt32(frame.count - 12)), "length field counts the body, not the CRC")
                #expect(Array(frame.suffix(4)) == le32(CRC32.checksum(frame[4 ..< frame.count - 4])), "CRC-32 trailer")
                let got = bodies(of: frame)
                try #require(got.count == 1)
                #expect(try Codec.decodeGuest(got[0]) == Envelope(id: id, c.message))
            }
        }

        @Test func hostCasesCoverEveryKind() {
            let kinds = Set(hostCases.map { body(of: Codec.frame(id: 0, $0.message))[0] })
            #expect(kinds == Set(1 ... 17))
        }

        @Test func guestCasesCoverEveryKind() {
            let kinds = Set(guestCases.map { body(of: Codec.frame(id: 0, $0.message))[0] })
            #expect(kinds == Set(0x81 ... 0x88))
        }

        @Test func exitStatusKeepsCodeAndSignalApart() throws {
            let byCode = try Codec.decodeGuest(body(of: Codec.frame(id: 5, .exited(ExitStatus(code: 9)))))
            let bySignal = try Codec.decodeGuest(body(of: Codec.frame(id: 5, .exited(ExitStatus(signal: 9)))))
            guard case .exited(let a) = byCode.message, case .exited(let b) = bySignal.message else {
                Issue.record("not an exit: \(byCode) \(bySignal)")
                return
            }
            #expect(a.code == 9 && a.signal == nil && a.shellCode == 9)
            #expect(b.code == nil && b.signal == 9 && b.shellCode == 137)
        }

        @Test func hostFramesAreUnknownToTheGuestDecoderAndViceVersa() {
            for c in hostCases {
                let b = body(of: Codec.frame(id: 1, c.message))
                #expect(throws: ProtocolError.unknownKind(b[0]), "\(c.name)") { try Codec.decodeGuest(b) }
            }
            for c in guestCases {
                let b = body(of: Codec.frame(id: 1, c.message))
                #expect(throws: ProtocolError.unknownKind(b[0]), "\(c.name)") { try Codec.decodeHost(b) }
            }
        }
    }
}

// MARK: - The frame decoder

extension CodecTests {
    @Suite struct FrameDecoderTests {
        /// Every host frame, one after another.
        static let stream: [UInt8] = hostCases.enumerated().flatMap { Codec.frame(id: UInt32($0.offset), $0.element.message) }

        static func expectedEnvelopes() -> [Envelope<HostMessage>] {
            hostCases.enumerated().map { Envelope(id: UInt32($0.offset), $0.element.message) }
        }

        @Test func frameSplitIntoOneBytePiecesIsReassembled() throws {
            let frames = smallHostCases.enumerated().map { Codec.frame(id: UInt32($0.offset), $0.element.message) }
            var decoder = FrameDecoder()
            var decoded: [Envelope<HostMessage>] = []
            for (index, frame) in frames.enumerated() {
                for (i, byte) in frame.enumerated() {
                    decoder.append(CollectionOfOne(byte))
                    let body = decoder.next()
                    if i < frame.count - 1 {
                        #expect(body == nil, "frame \(index) came out after only \(i + 1) of \(frame.count) bytes")
                    } else {
                        let b = try #require(body, "frame \(index) not complete after its last byte")
                        decoded.append(try Codec.decodeHost(b))
                    }
                }
            }
            #expect(decoded == smallHostCases.enumerated().map { Envelope(id: UInt32($0.offset), $0.element.message) })
            #expect(decoder.skippedBytes == 0)
        }

        @Test(arguments: [1, 3, 7, 8, 13, 4096, 65537])
        func streamInChunksDecodesInOrder(chunk: Int) throws {
            let decoded = try bodies(of: Self.stream, chunk: chunk).map { try Codec.decodeHost($0) }
            #expect(decoded == Self.expectedEnvelopes())
        }

        @Test func streamInRandomChunksDecodesInOrder() throws {
            let seed: UInt64 = 0x5EED
            var rng = SplitMix64(seed: seed)
            var decoder = FrameDecoder()
            var decoded: [Envelope<HostMessage>] = []
            var i = 0
            while i < Self.stream.count {
                let end = min(Self.stream.count, i + Int.random(in: 1 ... 300, using: &rng))
                decoder.append(Self.stream[i ..< end])
                while let b = decoder.next() { decoded.append(try Codec.decodeHost(b)) }
                i = end
            }
            #expect(decoded == Self.expectedEnvelopes(), "seed \(seed)")
        }

        /// Things a reader may find before the first real frame.
        static let garbage: [(String, [UInt8])] = [
            ("random bytes", { var r = SplitMix64(seed: 1); return r.bytes(300) }().filter { $0 != 0x53 }),
            ("zeros", [UInt8](repeating: 0, count: 1000)),
            ("partial magic", Array("STA".utf8)),
            ("magic with a bogus length", Array("SSTSTASTA".utf8)),
            ("zero length", AgentProtocol.magic + le32(0)),
            ("length below a header", AgentProtocol.magic + le32(4)),
            ("huge length", AgentProtocol.magic + le32(.max)),
            ("just over the limit", AgentProtocol.magic + le32(UInt32(AgentProtocol.maxBodyLength + 1))),
            ("text", Array("Booting Linux...\r\n[    0.000000] STA STAS?\n".utf8)),
        ]

        @Test(arguments: garbage.indices)
        func garbageBeforeAFrameIsSkipped(index: Int) throws {
            let (name, junk) = Self.garbage[index]
            let frame = Codec.frame(id: 77, .ping)
            var decoder = FrameDecoder()
            decoder.append(junk + frame)
            let nextB = decoder.next()
            let b = try #require(nextB, "\(name): no frame found")
            #expect(try Codec.decodeHost(b) == Envelope(id: 77, .ping), "\(name)")
            #expect(decoder.next() == nil, "\(name)")
            #expect(decoder.skippedBytes == junk.count, "\(name)")
        }

        @Test func bogusHugeLengthDoesNotStallTheStream() throws {
            // Without the length check the decoder would wait for 2 GiB that never come.
            var decoder = FrameDecoder()
            decoder.append(AgentProtocol.magic + le32(0x7FFF_FFFF) + [1, 2, 3])
            #expect(decoder.next() == nil)
            decoder.append(Codec.frame(id: 3, .shutdown))
            let nextB = decoder.next()
            let b = try #require(nextB)
            #expect(try Codec.decodeHost(b) == Envelope(id: 3, .shutdown))
        }

        @Test func largestAcceptedBodyIsDelivered() throws {
            // writeFile fields: path (4) + mode (4) + data (4 + n) + append (1); plus kind and id (5).
            let n = AgentProtocol.maxBodyLength - 18
            let frame = Codec.frame(id: 9, .writeFile(path: "", mode: 0, data: [UInt8](repeating: 0xAB, count: n), append: false))
            #expect(frame.count == 12 + AgentProtocol.maxBodyLength)
            let got = bodies(of: frame, chunk: 1 << 20)
            try #require(got.count == 1)
            guard case .writeFile(_, _, let data, _) = try Codec.decodeHost(got[0]).message else {
                Issue.record("not a writeFile")
                return
            }
            #expect(data.count == n)
        }

        @Test func bodyOverTheLimitIsTreatedAsNoise() throws {
            let n = AgentProtocol.maxBodyLength - 17
            let big = Codec.frame(id: 9, .writeFile(path: "", mode: 0, data: [UInt8](repeating: 0, count: n), append: false))
            var decoder = FrameDecoder()
            decoder.append(big + Codec.frame(id: 10, .ping))
            let nextB = decoder.next()
            let b = try #require(nextB)
            #expect(try Codec.decodeHost(b) == Envelope(id: 10, .ping))
            #expect(decoder.skippedBytes == big.count)
        }

        /// The resync case: a peer vanished mid-frame and the next one starts a new frame. When the
        /// cut falls inside the 8-byte header, the new frame's magic lands in the length field and
        /// the decoder finds its footing at once.
        @Test(arguments: 1 ..< 8)
        func frameCutInsideItsHeaderIsSkipped(cut: Int) throws {
            let first = Codec.frame(id: 1, .stdin(payload(100)))
            var decoder = FrameDecoder()
            decoder.append(first.prefix(cut) + Codec.frame(id: 2, .ping) + Codec.frame(id: 3, .closeStdin))
            let nextA = decoder.next()
            let a = try #require(nextA, "cut at \(cut)")
            let nextB = decoder.next()
            let b = try #require(nextB, "cut at \(cut)")
            #expect(try Codec.decodeHost(a) == Envelope(id: 2, .ping))
            #expect(try Codec.decodeHost(b) == Envelope(id: 3, .closeStdin))
            #expect(decoder.skippedBytes == cut)
        }

        /// The resync case with the cut inside the body: until the peer's hello, the decoder looks
        /// past an incomplete frame for complete, checksummed ones.
        @Test(arguments: [8, 9, 13, 50, 107])
        func frameCutInsideItsBodyIsFollowedByTheNextFrame(cut: Int) throws {
            let vanished = Codec.frame(id: 1, .stdin(payload(100)))
            let next = (2 ... 6).map { Codec.frame(id: UInt32($0), .setGeneration(UInt64($0))) }
            let decoded = bodies(of: Array(vanished.prefix(cut)) + next.flatMap { $0 }).compactMap { try? Codec.decodeHost($0) }
            #expect(decoded.contains(Envelope(id: 2, .setGeneration(2))), "cut at \(cut): \(decoded)")
            #expect(!decoded.contains { $0.id == 1 }, "cut at \(cut): the vanished frame came out as \(decoded)")
        }

        @Test func aSynchronizedDecoderWaitsForAFrameToComplete() throws {
            // Once the peer said hello, frames arrive whole: an incomplete one is in flight, and a
            // frame-shaped run of bytes inside its data must not be taken for a frame.
            let inner = Codec.frame(id: 7, .ping)
            let outer = Codec.frame(id: 1, .stdin(inner + payload(200)))
            var decoder = FrameDecoder()
            decoder.markSynchronized()
            decoder.append(outer.prefix(outer.count - 10))
            #expect(decoder.next() == nil)
            decoder.append(outer.suffix(10))
            let next = decoder.next()
            let body = try #require(next)
            #expect(try Codec.decodeHost(body) == Envelope(id: 1, .stdin(inner + payload(200))))
        }

        @Test func aCorruptedFrameIsSkippedByItsChecksum() throws {
            var bad = Codec.frame(id: 1, .stdin(payload(100)))
            bad[40] ^= 0x01
            let decoded = bodies(of: bad + Codec.frame(id: 2, .ping)).compactMap { try? Codec.decodeHost($0) }
            #expect(decoded == [Envelope(id: 2, .ping)])
        }

        @Test func resetDropsAPartialFrame() throws {
            var decoder = FrameDecoder()
            decoder.append(Codec.frame(id: 1, .stdin(payload(100))).prefix(40))
            #expect(decoder.next() == nil)
            decoder.reset()
            decoder.append(Codec.frame(id: 2, .ping))
            let nextB = decoder.next()
            let b = try #require(nextB)
            #expect(try Codec.decodeHost(b) == Envelope(id: 2, .ping))
            #expect(decoder.next() == nil)
        }

        @Test func bufferCompactionKeepsAPartialFrameIntact() throws {
            // The buffer never drains (half a frame always waits), so the decoder must compact it
            // once it has consumed 1 MiB, without losing the waiting half.
            var decoder = FrameDecoder()
            let data = payload(1000)
            let frame = Codec.frame(id: 4, .addEntropy(data))
            decoder.append(frame.prefix(500))
            #expect(decoder.next() == nil)
            var count = 0
            for _ in 0 ..< 3000 {
                decoder.append(frame.dropFirst(500) + frame.prefix(500))
                while let b = decoder.next() {
                    #expect(try Codec.decodeHost(b) == Envelope(id: 4, .addEntropy(data)))
                    count += 1
                }
            }
            #expect(count == 3000)
            decoder.append(frame.dropFirst(500))
            #expect(decoder.next() != nil)
            #expect(decoder.skippedBytes == 0)
        }
    }
}

// MARK: - Malformed bodies

extension CodecTests {
    @Suite struct CodecErrorTests {
        @Test(arguments: smallHostCases)
        func truncatedHostBodyThrowsTruncated(_ c: HostCase) {
            let full = body(of: Codec.frame(id: 8, c.message))
            for n in 0 ..< full.count {
                #expect(throws: ProtocolError.truncated, "\(c.name) cut to \(n) of \(full.count)") {
                    try Codec.decodeHost(Array(full.prefix(n)))
                }
            }
        }

        @Test(arguments: smallGuestCases)
        func truncatedGuestBodyThrowsTruncated(_ c: GuestCase) {
            let full = body(of: Codec.frame(id: 8, c.message))
            for n in 0 ..< full.count {
                #expect(throws: ProtocolError.truncated, "\(c.name) cut to \(n) of \(full.count)") {
                    try Codec.decodeGuest(Array(full.prefix(n)))
                }
            }
        }

        @Test func truncatedLargeBodiesThrowTruncated() {
            for c in hostCases where !smallHostCases.contains(where: { $0.name == c.name }) {
                let full = body(of: Codec.frame(id: 8, c.message))
                for n in [0, 4, 5, 9, 13, full.count / 2, full.count - 1] {
                    #expect(throws: ProtocolError.truncated, "\(c.name) cut to \(n)") { try Codec.decodeHost(Array(full.prefix(n))) }
                }
            }
            for c in guestCases where !smallGuestCases.contains(where: { $0.name == c.name }) {
                let full = body(of: Codec.frame(id: 8, c.message))
                for n in [0, 4, 5, 9, 13, full.count / 2, full.count - 1] {
                    #expect(throws: ProtocolError.truncated, "\(c.name) cut to \(n)") { try Codec.decodeGuest(Array(full.prefix(n))) }
                }
            }
        }

        @Test(arguments: [1, 2, 7, 1000])
        func trailingBytesAreRefused(extra: Int) {
            for c in hostCases {
                let b = body(of: Codec.frame(id: 8, c.message)) + [UInt8](repeating: 0, count: extra)
                #expect(throws: ProtocolError.trailingBytes(extra), "\(c.name)") { try Codec.decodeHost(b) }
            }
            for c in guestCases {
                let b = body(of: Codec.frame(id: 8, c.message)) + [UInt8](repeating: 0xFF, count: extra)
                #expect(throws: ProtocolError.trailingBytes(extra), "\(c.name)") { try Codec.decodeGuest(b) }
            }
        }

        @Test(arguments: [0, 18, 19, 0x7F, 0x80, 0x81, 0x88, 0xFF] as [UInt8])
        func unknownHostKindThrows(kind: UInt8) {
            #expect(throws: ProtocolError.unknownKind(kind)) { try Codec.decodeHost([kind] + le32(1)) }
        }

        @Test(arguments: [0, 1, 14, 0x7F, 0x80, 0x89, 0xC0, 0xFF] as [UInt8])
        func unknownGuestKindThrows(kind: UInt8) {
            #expect(throws: ProtocolError.unknownKind(kind)) { try Codec.decodeGuest([kind] + le32(1)) }
        }

        @Test(arguments: [0, 3, 0xFF] as [UInt8])
        func unknownOutputStreamThrows(stream: UInt8) {
            #expect(throws: ProtocolError.unknownKind(0x83)) { try Codec.decodeGuest([0x83] + le32(1) + [stream] + le32(0)) }
        }

        @Test func invalidUTF8IsRefused() {
            #expect(throws: ProtocolError.invalidString) { try Codec.decodeHost([6] + le32(1) + le32(2) + [0xFF, 0xFE]) }
            #expect(throws: ProtocolError.invalidString) { try Codec.decodeHost([11] + le32(1) + le32(3) + [0xE2, 0x98, 0x41]) }
            #expect(throws: ProtocolError.invalidString) {
                try Codec.decodeGuest([0x87] + le32(1) + le32(2) + le32(1) + [0xC0])
            }
        }

        @Test func hugeCountsFailFastWithoutAllocating() {
            // exec whose argv claims 4 billion strings; data claiming 4 GiB.
            #expect(throws: ProtocolError.truncated) { try Codec.decodeHost([2] + le32(1) + le32(.max)) }
            #expect(throws: ProtocolError.truncated) { try Codec.decodeHost([3] + le32(1) + le32(.max) + [1, 2, 3]) }
            #expect(throws: ProtocolError.truncated) { try Codec.decodeGuest([0x86] + le32(1) + le32(0x8000_0000)) }
        }
    }
}

// MARK: - Fuzzing

extension CodecTests {
    @Suite(.timeLimit(.minutes(2))) struct CodecFuzzTests {
        /// Set STASIS_FUZZ_SEED to replay a failure.
        static let baseSeed: UInt64 = ProcessInfo.processInfo.environment["STASIS_FUZZ_SEED"].flatMap { UInt64($0) }
            ?? 0x5743_4153_5453_0001

        /// Feeds `bytes` in random chunks, decodes every body both ways, and checks the decoder's
        /// bookkeeping. Returns a description of the first broken invariant, or nil.
        static func exercise(_ bytes: [UInt8], rng: inout SplitMix64) -> String? {
            var decoder = FrameDecoder()
            var delivered = 0
            var frames = 0
            var i = 0
            while i < bytes.count {
                let end = min(bytes.count, i + Int.random(in: 1 ... 64, using: &rng))
                decoder.append(bytes[i ..< end])
                i = end
                while let body = decoder.next() {
                    frames += 1
                    // Each frame consumes at least 17 bytes, so more frames than this means a loop.
                    if frames > bytes.count / 17 + 1 { return "decoder produced \(frames) frames from \(bytes.count) bytes" }
                    if body.count < 5 || body.count > AgentProtocol.maxBodyLength { return "body of \(body.count) bytes" }
                    delivered += 12 + body.count
                    if let host = try? Codec.decodeHost(body) {
                        // Whatever decodes must survive its own round trip.
                        let again = try? Codec.decodeHost(Array(Codec.frame(id: host.id, host.message).dropFirst(8).dropLast(4)))
                        if again != host { return "host message \(host) did not round-trip: \(String(describing: again))" }
                    }
                    if let guest = try? Codec.decodeGuest(body) {
                        let again = try? Codec.decodeGuest(Array(Codec.frame(id: guest.id, guest.message).dropFirst(8).dropLast(4)))
                        if again != guest { return "guest message \(guest) did not round-trip: \(String(describing: again))" }
                    }
                }
            }
            if delivered + decoder.skippedBytes > bytes.count {
                return "delivered \(delivered) + skipped \(decoder.skippedBytes) > \(bytes.count) bytes in"
            }
            return nil
        }

        @Test func randomBytesNeverCrashOrLoop() {
            let base = Self.baseSeed
            var failures = 0
            for iteration in 0 ..< 5000 {
                var rng = SplitMix64(seed: base &+ UInt64(iteration))
                var bytes = rng.bytes(Int.random(in: 0 ... 600, using: &rng))
                // Plant plausible headers so that the decoder gets past the magic search.
                for _ in 0 ..< Int.random(in: 0 ... 4, using: &rng) where bytes.count >= 8 {
                    let at = Int.random(in: 0 ... bytes.count - 8, using: &rng)
                    let length = UInt32.random(in: 0 ... UInt32(bytes.count), using: &rng)
                    bytes.replaceSubrange(at ..< at + 8, with: AgentProtocol.magic + le32(length))
                    if Bool.random(using: &rng), at + 9 <= bytes.count {
                        bytes[at + 8] = Bool.random(using: &rng) ? UInt8.random(in: 1 ... 15, using: &rng) : UInt8.random(in: 0x81 ... 0x87, using: &rng)
                    }
                }
                if let problem = Self.exercise(bytes, rng: &rng) {
                    failures += 1
                    Issue.record("STASIS_FUZZ_SEED=\(base) iteration \(iteration) (seed \(base &+ UInt64(iteration))): \(problem)")
                    if failures > 10 { return }
                }
            }
        }

        @Test func mutatedFramesNeverCrashOrLoop() {
            let base = Self.baseSeed ^ 0xFFFF_0000_FFFF_0000
            let frames: [[UInt8]] = smallHostCases.map { Codec.frame(id: 7, $0.message) }
                + smallGuestCases.map { Codec.frame(id: 7, $0.message) }
                + [Codec.frame(id: 7, .stdin(payload(3000))), Codec.frame(id: 7, .output(.stdout, payload(2000)))]
            var failures = 0
            for iteration in 0 ..< 5000 {
                var rng = SplitMix64(seed: base &+ UInt64(iteration))
                var bytes = frames.randomElement(using: &rng)!
                for _ in 0 ..< Int.random(in: 1 ... 6, using: &rng) {
                    // Aim half the mutations at the header and the kind/id/first field, where they hurt.
                    let limit = Bool.random(using: &rng) ? min(bytes.count, 24) : bytes.count
                    switch Int.random(in: 0 ..< 5, using: &rng) {
                    case 0 where limit > 0:
                        bytes[Int.random(in: 0 ..< limit, using: &rng)] ^= 1 << UInt8.random(in: 0 ..< 8, using: &rng)
                    case 1:
                        bytes.insert(UInt8.random(in: 0 ... 255, using: &rng), at: Int.random(in: 0 ... limit, using: &rng))
                    case 2 where limit > 0:
                        bytes.remove(at: Int.random(in: 0 ..< limit, using: &rng))
                    case 3 where limit > 0:
                        bytes[Int.random(in: 0 ..< limit, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
                    case 4 where bytes.count > 0:
                        bytes.removeLast(Int.random(in: 0 ... min(bytes.count, 16), using: &rng))
                    default:
                        break
                    }
                }
                // Sometimes a valid frame follows, or the frame repeats.
                if Bool.random(using: &rng) { bytes += frames.randomElement(using: &rng)! }
                if let problem = Self.exercise(bytes, rng: &rng) {
                    failures += 1
                    Issue.record("STASIS_FUZZ_SEED=\(Self.baseSeed) iteration \(iteration) (seed \(base &+ UInt64(iteration))): \(problem)")
                    if failures > 10 { return }
                }
            }
        }

        @Test func mutatedBodiesDecodeOrThrowProtocolErrors() {
            // Straight to the codec, bypassing the decoder's length checks.
            let base = Self.baseSeed ^ 0x1234_5678
            let hostBodies = smallHostCases.map { body(of: Codec.frame(id: 1, $0.message)) }
            let guestBodies = smallGuestCases.map { body(of: Codec.frame(id: 1, $0.message)) }
            for iteration in 0 ..< 5000 {
                var rng = SplitMix64(seed: base &+ UInt64(iteration))
                var b = (hostBodies + guestBodies).randomElement(using: &rng)!
                for _ in 0 ..< Int.random(in: 1 ... 4, using: &rng) where !b.isEmpty {
                    b[Int.random(in: 0 ..< b.count, using: &rng)] = UInt8.random(in: 0 ... 255, using: &rng)
                }
                // Typed throws guarantee the error type; reaching the end without trapping is the test.
                let host = try? Codec.decodeHost(b)
                let guest = try? Codec.decodeGuest(b)
                if host != nil && guest != nil {
                    Issue.record("STASIS_FUZZ_SEED=\(Self.baseSeed) iteration \(iteration): one body decoded both ways")
                    return
                }
            }
        }
    }
}
