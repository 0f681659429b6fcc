import Foundation
@testable import ChunkStore
import StasisCore
import Testing

/// Random and mutated inputs to every decoder of outside bytes: each must give an error or a
/// valid result, never crash, hang or allocate wildly.
@Suite struct FuzzTests {
    /// A small valid seekable file (with or without checksums) to mutate.
    static func seekableSample(checksums: Bool, _ rng: inout SeededGenerator) throws -> [UInt8] {
        let zstd = try Zstd()
        var entries: [SeekTable.Entry] = []
        var data: [UInt8] = []
        for _ in 0 ..< Int.random(in: 0 ... 6, using: &rng) {
            let content = sampleBytes(Int.random(in: 0 ... 3000, using: &rng), &rng)
            let frame = try zstd.compress(content)
            data += frame
            entries.append(.init(compressedSize: frame.count, decompressedSize: content.count, checksum: checksums ? content.withUnsafeBytes(XXH64.checksum32) : nil))
        }
        return data + (try SeekTable(entries: entries, hasChecksums: checksums).encoded())
    }

    static func mutate(_ input: [UInt8], _ rng: inout SeededGenerator) -> [UInt8] {
        var bytes = input
        switch Int.random(in: 0 ..< 6, using: &rng) {
        case 0:  // flip a few bytes anywhere
            for _ in 0 ..< Int.random(in: 1 ... 4, using: &rng) where !bytes.isEmpty {
                bytes[Int.random(in: 0 ..< bytes.count, using: &rng)] ^= UInt8.random(in: 1 ... 255, using: &rng)
            }
        case 1:  // flip bytes in the table's tail, where the sizes and counts are
            for _ in 0 ..< Int.random(in: 1 ... 3, using: &rng) where bytes.count > 0 {
                let back = Int.random(in: 1 ... min(bytes.count, 40), using: &rng)
                bytes[bytes.count - back] = UInt8.random(in: 0 ... 255, using: &rng)
            }
        case 2:  // truncate at either end
            let cut = Int.random(in: 0 ... bytes.count, using: &rng)
            bytes = Bool.random(using: &rng) ? Array(bytes.prefix(cut)) : Array(bytes.suffix(cut))
        case 3:  // a huge frame count or size
            if bytes.count >= 9 {
                let at = bytes.count - 9 - (Bool.random(using: &rng) ? 0 : Int.random(in: 0 ... min(bytes.count - 9, 48), using: &rng))
                for i in 0 ..< 4 { bytes[at + i] = i == 3 ? 0xFF : UInt8.random(in: 0 ... 255, using: &rng) }
            }
        case 4:  // random bytes ending in the seekable footer magic
            bytes = (0 ..< Int.random(in: 0 ... 200, using: &rng)).map { _ in UInt8.random(in: 0 ... 255, using: &rng) } + [0xB1, 0xEA, 0x92, 0x8F]
        default:  // insert or delete a byte in the middle
            if !bytes.isEmpty {
                let at = Int.random(in: 0 ..< bytes.count, using: &rng)
                if Bool.random(using: &rng) { bytes.remove(at: at) } else { bytes.insert(UInt8.random(in: 0 ... 255, using: &rng), at: at) }
            }
        }
        return bytes
    }

    @Test func seekTableReaderSurvivesDamage() throws {
        var rng = SeededGenerator(seed: 0x5EEC)
        var refused = 0
        var frameErrors = 0
        for round in 0 ..< 5000 {
            let sample = try Self.seekableSample(checksums: round % 2 == 0, &rng)
            let input = Self.mutate(sample, &rng)
            let reader: SeekableReader
            do { reader = try SeekableReader(bytes: input) } catch let error as StasisError {
                #expect(error.code == .corrupted, "round \(round): \(error)")
                refused += 1
                continue
            }
            #expect(reader.table.compressedOffsets.last.map { $0 <= input.count } == true)
            for index in 0 ..< min(reader.frameCount, 16) {
                do { _ = try reader.frame(index) } catch let error as StasisError {
                    #expect(error.code == .corrupted, "round \(round) frame \(index): \(error)")
                    frameErrors += 1
                }
            }
        }
        // Most mutations must be caught, some by the table and some only by a frame.
        #expect(refused > 2000)
        #expect(frameErrors > 50)
    }

    @Test func seekTableReaderSurvivesRandomBytes() throws {
        var rng = SeededGenerator(seed: 42)
        for _ in 0 ..< 3000 {
            let input = (0 ..< Int.random(in: 0 ... 64, using: &rng)).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            #expect(throws: StasisError.self) { try SeekableReader(bytes: input) }
        }
    }

    @Test func frameListDecodingSurvivesDamage() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("f")
        var rng = SeededGenerator(seed: 77)
        try makeSparseFile(source, size: 1 << 20, regions: [(8192, sampleBytes(20_000, &rng)), (600_000, sampleBytes(9000, &rng))])
        let frames = try FrameCutter(store: ChunkStore(root: dir), frameSize: 4096).cut(source).frames
        let valid = [UInt8](try JSONEncoder().encode(frames))
        var accepted = 0
        for _ in 0 ..< 4000 {
            let input = Self.mutate(valid, &rng)
            if let decoded = try? JSONDecoder().decode(FrameList.self, from: Data(input)) {
                // Whatever decodes is self-consistent: it re-encodes to something that decodes equal.
                let again = try JSONDecoder().decode(FrameList.self, from: JSONEncoder().encode(decoded))
                #expect(again == decoded)
                #expect(decoded.nonZeroFrames.allSatisfy { $0 < decoded.frameCount })
                accepted += 1
            }
        }
        #expect(accepted < 400, "\(accepted) damaged lists accepted")
    }

    @Test func patchedFrameListDecodingSurvivesDamage() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, changed) = try PagePatchTests.makeBaseAndChange(dir)
        let cutter = try FrameCutter(store: ChunkStore(root: dir), frameSize: 65536)
        let frames = try cutter.cut(changed, base: try cutter.cut(base).frames).frames
        #expect(frames.patchedFrames > 0)
        try Self.expectDecodingSurvivesDamage(frames, seed: 78)
    }

    @Test func referencedFrameListDecodingSurvivesDamage() throws {
        let dir = try makeTemporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (reference, file) = try FrameReferenceTests.makeFiles(dir)
        let frames = try FrameCutter(store: ChunkStore(root: dir), frameSize: 65536).cut(file, reference: reference).frames
        #expect(frames.deltaFrames > 0)
        try Self.expectDecodingSurvivesDamage(frames, seed: 79)
    }

    /// 3,000 mutations of `frames`' JSON: whatever decodes re-encodes to an equal list, and at
    /// most one in ten is accepted.
    static func expectDecodingSurvivesDamage(_ frames: FrameList, seed: UInt64) throws {
        let valid = [UInt8](try JSONEncoder().encode(frames))
        var rng = SeededGenerator(seed: seed)
        var accepted = 0
        for _ in 0 ..< 3000 {
            if let decoded = try? JSONDecoder().decode(FrameList.self, from: Data(Self.mutate(valid, &rng))) {
                #expect(try JSONDecoder().decode(FrameList.self, from: JSONEncoder().encode(decoded)) == decoded)
                accepted += 1
            }
        }
        #expect(accepted < 300, "\(accepted) damaged lists accepted")
    }

    @Test func packedNumbersRoundTripAndRefuseDamage() throws {
        var rng = SeededGenerator(seed: 80)
        var values: [Int] = [0, 1, -1, 63, -64, 64, 127, 128, Int.max, Int.min, Int.max - 1, Int.min + 1]
        for _ in 0 ..< 2000 { values.append(Int(truncatingIfNeeded: rng.next()) >> Int.random(in: 0 ... 63, using: &rng)) }
        #expect(try PackedNumbers.decode(PackedNumbers.encode(values), field: "test") == values)
        #expect(try PackedNumbers.decode(PackedNumbers.encode([]), field: "test") == [])
        let names = (0 ..< 5).map { _ in Hex.encode((0 ..< 32).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }) }
        #expect(try PackedNumbers.decodeDigests(PackedNumbers.encode(digests: names), field: "test") == names)
        func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
        for (name, text) in [("not base64", "@@@"), ("cut inside a number", base64([0x80])),
                             ("wider than 64 bits", base64([UInt8](repeating: 0xFF, count: 10) + [0x01])),
                             ("65th bit", base64([UInt8](repeating: 0xFF, count: 9) + [0x02]))] {
            #expect(throws: StasisError.self, "\(name)") { try PackedNumbers.decode(text, field: "test") }
        }
        #expect(throws: StasisError.self) { try PackedNumbers.decodeDigests(base64([1, 2, 3]), field: "test") }
        // Mutated text never crashes, and whatever decodes re-encodes to the same numbers.
        let valid = Array(PackedNumbers.encode(values).utf8)
        for _ in 0 ..< 3000 {
            let text = String(decoding: Self.mutate(valid, &rng), as: UTF8.self)
            if let decoded = try? PackedNumbers.decode(text, field: "test") {
                #expect(try PackedNumbers.decode(PackedNumbers.encode(decoded), field: "test") == decoded)
            }
        }
    }

    @Test func frameListRefusesHostileNumbers() throws {
        let hash = String(repeating: "ab", count: 32)
        let good = try FrameList(frameSize: 4096, totalSize: 3 * 4096, frames: [(1, ChunkRef(hash: hash, rawSize: 4096, storedSize: 20))])
        let digest = good.digest
        func json(frameSize: Int = 4096, totalSize: Int = 3 * 4096, chunks: [String] = [hash], stored: [Int] = [20], frames: [Int] = [-1, 0, -1], digest: String = digest, version: Int = 1) -> Data {
            let object: [String: Any] = ["version": version, "frameSize": frameSize, "totalSize": totalSize, "chunks": chunks, "storedSizes": stored, "frames": frames, "digest": digest]
            return (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
        }
        #expect(try JSONDecoder().decode(FrameList.self, from: json()) == good)
        let hostile: [(String, Data)] = [
            ("Int.min run", json(frames: [Int.min])),
            ("huge run", json(frames: [-(1 << 62)])),
            ("run past the end", json(frames: [-1, 0, -2])),
            ("too few frames", json(frames: [-1, 0])),
            ("chunk out of range", json(frames: [-1, 1, -1])),
            ("negative huge chunk", json(frames: [-1, Int.max, -1])),
            ("frame size 3", json(frameSize: 3)),
            ("frame size not a power of two", json(frameSize: 12288)),
            ("huge total", json(totalSize: Int.max)),
            ("negative total", json(totalSize: -1)),
            ("huge total, one run", json(totalSize: 1 << 42, frames: [-(1 << 30)])),
            ("bad hash", json(chunks: ["../../etc/passwd"])),
            ("duplicate hash", json(chunks: [hash, hash], stored: [20, 20])),
            ("unused chunk", json(chunks: [hash, String(repeating: "cd", count: 32)], stored: [20, 20])),
            ("stored size zero", json(stored: [0])),
            ("stored size huge", json(stored: [Int.max])),
            ("sizes missing", json(stored: [])),
            ("wrong digest", json(digest: "sha256f:00")),
            ("frame moved", json(frames: [0, -2])),
            ("a version from the future", json(version: FrameList.currentVersion + 1)),
        ]
        for (name, data) in hostile {
            #expect(throws: (any Error).self, "\(name)") { try JSONDecoder().decode(FrameList.self, from: data) }
        }
        // Version 5 packs the same numbers into base64; they are checked the same way.
        func packed(frames: [Int], stored: [Int] = [20]) -> Data {
            let object: [String: Any] = ["version": 5, "frameSize": 4096, "totalSize": 3 * 4096, "chunks": PackedNumbers.encode(digests: [hash]),
                                         "storedSizes": PackedNumbers.encode(stored), "frames": PackedNumbers.encode(frames), "digest": digest]
            return (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
        }
        #expect(try JSONDecoder().decode(FrameList.self, from: packed(frames: [-1, 0, -1])) == good)
        for (frames, stored) in [([Int.min], [20]), ([-(1 << 62)], [20]), ([-1, 1, -1], [20]), ([-1, 0, -1], [Int.max]), ([-1, 0, -1], [])] {
            #expect(throws: (any Error).self, "\(frames) \(stored)") { try JSONDecoder().decode(FrameList.self, from: packed(frames: frames, stored: stored)) }
        }
    }
}
