import CZstd
import Foundation
@testable import ChunkStore
import StasisCore
import Testing

@Suite struct ZstdTests {
    @Test(arguments: [1, 100, 4096, 65536, 2 << 20])
    func roundTrips(size: Int) throws {
        var rng = SeededGenerator(seed: UInt64(size))
        let input = sampleBytes(size, &rng)
        let zstd = try Zstd()
        let frame = try zstd.compress(input, level: 3)
        #expect(frame.count < size + 64)
        #expect(try zstd.decompress(frame, expectedSize: size) == input)
        // One frame, its size in the header, a content checksum (frame header descriptor bit 2).
        #expect(ZSTD_getFrameContentSize(frame, frame.count) == UInt64(size))
        #expect(ZSTD_findFrameCompressedSize(frame, frame.count) == frame.count)
        #expect(frame[4] & 0x04 != 0, "no content checksum flag")
    }

    @Test func reusesItsContextAcrossLevels() throws {
        let zstd = try Zstd()
        let input = [UInt8](repeating: 7, count: 10_000) + (0 ..< 10_000).map { UInt8(truncatingIfNeeded: $0 * $0) }
        for level in [1, 3, 19, -5, 3] {
            let frame = try zstd.compress(input, level: level)
            #expect(try zstd.decompress(frame, expectedSize: input.count) == input, "level \(level)")
        }
        #expect(throws: StasisError.self) { try zstd.compress(input, level: 99) }
    }

    @Test func refusesAWrongDeclaredSize() throws {
        let zstd = try Zstd()
        let frame = try zstd.compress([UInt8](repeating: 1, count: 5000))
        for wrong in [4999, 5001, 0] {
            let error = #expect(throws: StasisError.self) { try zstd.decompress(frame, expectedSize: wrong) }
            #expect(error?.code == .corrupted)
        }
        let capped = #expect(throws: StasisError.self) { try zstd.decompress(frame, expectedSize: 5000, maxSize: 4096) }
        #expect(capped?.code == .corrupted)
    }

    @Test func refusesTrailingBytesTruncationAndDamage() throws {
        let zstd = try Zstd()
        var rng = SeededGenerator(seed: 9)
        let input = sampleBytes(20_000, &rng)
        let frame = try zstd.compress(input)
        let damaged: [[UInt8]] = [
            frame + [0],
            Array(frame.dropLast()),
            Array(frame.prefix(5)),
            [],
            { var f = frame; f[f.count - 1] ^= 1; return f }(),  // checksum
            { var f = frame; f[f.count / 2] ^= 0x10; return f }(),
        ]
        for bytes in damaged {
            let error = #expect(throws: StasisError.self) { try zstd.decompress(bytes, expectedSize: input.count) }
            #expect(error?.code == .corrupted)
        }
    }

    @Test func refusesAClaimLargerThanTheFrameCanHold() throws {
        // A 30-byte "frame" declaring 1 GiB must be refused before anything is allocated.
        let zstd = try Zstd()
        let frame = try zstd.compress([UInt8](repeating: 0, count: 1 << 20))
        let error = #expect(throws: StasisError.self) { try zstd.decompress(frame, expectedSize: 1 << 30) }
        #expect(error?.code == .corrupted)
        #expect(try zstd.decompress(frame, expectedSize: 1 << 20).allSatisfy { $0 == 0 })
    }

    @Test func xxh64MatchesKnownVectors() {
        #expect(XXH64.hash([]) == 0xEF46_DB37_51D8_E999)
        #expect(XXH64.hash(Array("abc".utf8)) == 0x44BC_2CF5_AD77_0999)
    }

    @Test func xxh64MatchesZstdFrameChecksums() throws {
        // zstd ends each frame with the low 32 bits of XXH64(content): an independent implementation
        // to check every length class (tail bytes, 4-byte and 8-byte steps, 32-byte stripes).
        let zstd = try Zstd()
        var rng = SeededGenerator(seed: 64)
        for size in Array(0 ... 80) + [255, 1000, 4096, 100_003] {
            let input = (0 ..< size).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            let frame = try zstd.compress(input)
            let tail = frame.suffix(4)
            let stored = tail.reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            #expect(input.withUnsafeBytes(XXH64.checksum32) == stored, "size \(size)")
        }
    }

    /// A prefix that is the input itself is copied, not ignored (zstd drops a prefix that overlaps
    /// its input): the input then costs a few bytes; and only the same prefix decodes it.
    @Test func anArrayCompressedOverItselfCostsAFewBytes() throws {
        var rng = SeededGenerator(seed: 7)
        let bytes = (0 ..< 68_000).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
        let zstd = try Zstd()
        let frame = try zstd.compress(bytes, prefix: bytes)
        #expect(frame.count < 100, "\(frame.count) bytes")
        #expect(try zstd.decompress(frame, expectedSize: bytes.count, prefix: bytes) == bytes)
        #expect(throws: StasisError.self) { try zstd.decompress(frame, expectedSize: bytes.count, prefix: Array(bytes.reversed())) }
    }
}
