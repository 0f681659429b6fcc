import Foundation
import StasisCore

/// Collapses a chain of qcow2 layers into one file over a chosen lower layer, reading the layers
/// and never writing them (QEMU may still hold them as backing files).
///
/// `qemu-img convert -B BASE` copies only what the top layer itself holds: it assumes BASE is the
/// top's own backing file. With layers between them (overlays kept by `--leave-running`
/// snapshots, or snapshot disks below when a chain is flattened onto the image) their data would
/// be lost. So the lowest layer above BASE is converted onto BASE, and each higher layer is then
/// copied, pointed at that result and committed into it: each step copies one layer's own data.
enum DiskLayers {
    /// Cluster size of every qcow2 layer stasis creates: a guest page. With QEMU's default of
    /// 64 KiB, a 4 KiB write copies up a whole cluster and a layer's metadata takes five
    /// clusters, so a session's turn snapshot cost ~0.7 MB of disk for a 64 KiB change.
    static let clusterSize = 4096
    /// `qemu-img create` / `convert` options for it.
    static var createOptions: [String] { ["-o", "cluster_size=\(clusterSize)"] }

    /// Writes `output`: the content of `top` as a qcow2 whose backing file is `base`. With
    /// `stop`, only the layers above `stop` are copied, over `base`: `base` must hold what `stop`
    /// and everything below it hold (the disk of the snapshot that froze `stop`).
    static func collapse(top: URL, above stop: String? = nil, onto base: String, format: String, into output: URL) async throws {
        let layers = try await Self.layers(from: top, above: stop ?? base)
        guard let lowest = layers.first else {
            throw StasisError(.invalidState, "\(stop ?? base) is not below \(top.path) in its chain of disk layers")
        }
        try await HostTool.run("qemu-img", ["convert", "-U", "-O", "qcow2"] + createOptions + ["-B", base, "-F", format, lowest, output.path])
        let scratch = output.deletingLastPathComponent().appendingPathComponent(".layer-\(UInt32.random(in: 0 ... .max)).qcow2")
        defer { try? FileManager.default.removeItem(at: scratch) }
        for layer in layers.dropFirst() {
            try? FileManager.default.removeItem(at: scratch)
            try await Machine.copySparse(URL(fileURLWithPath: layer), to: scratch)
            // Unsafe rebase: only the pointer changes, and `output` holds what the old backing held.
            try await HostTool.run("qemu-img", ["rebase", "-u", "-f", "qcow2", "-b", output.path, "-F", "qcow2", scratch.path])
            try await HostTool.run("qemu-img", ["commit", "-q", "-f", "qcow2", scratch.path])
        }
    }

    /// Whether a qcow2 layer holds no data of its own, so that it reads exactly as its backing
    /// file does: its L1 table is all zeros (no L2 table, so no cluster, not even a zeroed one).
    /// A guest that wrote nothing between two snapshots leaves such a layer.
    static func holdsNoData(_ file: URL) throws -> Bool {
        let handle: FileHandle
        do { handle = try FileHandle(forReadingFrom: file) } catch {
            throw StasisError(.ioFailure, "cannot read \(file.path)", cause: error)
        }
        defer { try? handle.close() }
        func read(_ offset: UInt64, _ count: Int) throws -> [UInt8] {
            try handle.seek(toOffset: offset)
            let bytes = Array(try handle.read(upToCount: count) ?? Data())
            guard bytes.count == count else { throw StasisError(.corrupted, "\(file.path) is not a whole qcow2 file") }
            return bytes
        }
        func bigEndian(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
        let header = try read(0, 48)
        guard bigEndian(header[0 ..< 4]) == 0x5146_49fb else { throw StasisError(.corrupted, "\(file.path) is not a qcow2 file") }
        let l1Entries = bigEndian(header[36 ..< 40])
        let l1Offset = bigEndian(header[40 ..< 48])
        guard l1Entries <= 1 << 24 else { throw StasisError(.corrupted, "\(file.path) has an L1 table of \(l1Entries) entries") }
        return try read(l1Offset, Int(l1Entries) * 8).allSatisfy { $0 == 0 }
    }

    /// The files of `top`'s chain above `base`, lowest first; empty if `base` is not in it.
    static func layers(from top: URL, above base: String) async throws -> [String] {
        let json = try await HostTool.run("qemu-img", ["info", "-U", "--backing-chain", "--output=json", top.path]).standardOutput
        guard let chain = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] else {
            throw StasisError(.toolFailed, "qemu-img info printed no chain for \(top.path)")
        }
        let resolvedBase = URL(fileURLWithPath: base).resolvingSymlinksInPath().path
        var above: [String] = []
        for image in chain {
            guard let file = image["filename"] as? String else { break }
            if file == base || URL(fileURLWithPath: file).resolvingSymlinksInPath().path == resolvedBase { return above.reversed() }
            above.append(file)
        }
        return []
    }
}
