import Foundation
@testable import ChunkStore
import StasisCore
import Testing

/// A fresh folder under /tmp, removed by the caller.
func makeTemporaryFolder() throws -> URL {
    let url = URL(fileURLWithPath: "/tmp/stasis-chunks-test-\(UInt64.random(in: 0 ... .max))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// SplitMix64: a seeded generator, so a failing random test fails the same way every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Bytes that compress somewhat, like memory: random words drawn from a small vocabulary,
/// with stretches of pure noise.
func sampleBytes(_ count: Int, _ rng: inout SeededGenerator) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        let run = Int.random(in: 1 ... 64, using: &rng)
        let noisy = Int.random(in: 0 ..< 4, using: &rng) == 0
        let word = UInt8.random(in: 1 ... 8, using: &rng)
        for j in i ..< min(i + run, count) { out[j] = noisy ? UInt8.random(in: 0 ... 255, using: &rng) : word &* UInt8(truncatingIfNeeded: j % 7) | 1 }
        i += run
    }
    return out
}

/// Creates a sparse file of `size` bytes holding `regions` and nothing else.
func makeSparseFile(_ url: URL, size: Int, regions: [(offset: Int, bytes: [UInt8])]) throws {
    let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw StasisError(.ioFailure, "cannot create \(url.path)", cause: Errno()) }
    defer { close(fd) }
    guard ftruncate(fd, off_t(size)) == 0 else { throw StasisError(.ioFailure, "ftruncate", cause: Errno()) }
    for region in regions {
        try region.bytes.withUnsafeBytes { try FileIO.write(fd, $0, at: region.offset) }
    }
}

/// The bytes of a file.
func contents(_ url: URL) throws -> [UInt8] { [UInt8](try Data(contentsOf: url)) }

/// Bytes the file system allocated for `url` (st_blocks).
func allocatedBytes(_ url: URL) throws -> Int {
    var st = stat()
    guard stat(url.path, &st) == 0 else { throw StasisError(.ioFailure, "stat \(url.path)", cause: Errno()) }
    return Int(st.st_blocks) * 512
}

/// Runs the zstd command-line tool and returns its exit status and stderr.
@discardableResult
func zstdTool(_ arguments: [String]) throws -> (status: Int32, errors: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/zstd")
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}

/// The names of the files in a folder, hidden ones included.
func listing(_ folder: URL) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
}

/// Flips one byte of a file in place.
func flipByte(of path: String, at offset: Int) throws {
    var bytes = try contents(URL(fileURLWithPath: path))
    bytes[offset] ^= 0x5A
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// `list` as the JSON object a version 4 writer made: its packed fields as plain arrays.
func version4Object(_ list: FrameList) throws -> [String: Any] {
    var object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(list)) as? [String: Any])
    #expect(object["version"] as? Int == 5)
    for key in ["storedSizes", "frames", "patches", "deltas", "packed"] {
        if let text = object[key] as? String { object[key] = try PackedNumbers.decode(text, field: key) }
    }
    for key in ["chunks", "packs"] {
        if let text = object[key] as? String { object[key] = try PackedNumbers.decodeDigests(text, field: key) }
    }
    object["version"] = 4
    return object
}
