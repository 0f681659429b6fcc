import ArgumentParser
import ChunkStore
import Foundation
import LazyMemory
import Snapshots
import StasisCore

/// Serves one snapshot's RAM to one lazily restored machine (see docs/chunk-store.md, "Lazy
/// restore"). Started by `stasis restore --lazy`; not meant to be run by hand.
@main
struct StasisMemfs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stasis-memfs",
        abstract: "Serve a snapshot's memory through FUSE, a frame at a time (started by stasis restore --lazy).",
        discussion: """
        Mounts a FUSE file system with one file, `memory`, at --mount and writes "ready" on \
        standard output once it can be opened. A frame of the snapshot's RAM is decompressed (and \
        checked by its zstd checksum) the first time the guest touches it. It exits and unmounts when \
        the QEMU that opened the file closes it, or after --open-timeout if nothing opens it.
        """)

    @Option(help: "The Stasis home holding the snapshot.") var home: String
    @Option(help: "The snapshot whose RAM to serve (its whole id).") var snapshot: String
    @Option(help: "An empty folder to mount on.") var mount: String
    @Option(help: "Seconds to wait for the first open before giving up.") var openTimeout: Int = 60

    func run() throws {
        OpenFileLimit.raiseToHardLimit()
        let store = SnapshotStore(home: StasisHome(root: URL(fileURLWithPath: home)))
        // The restore that started this has just verified the snapshot; each frame is checked
        // by its zstd checksum as it is read.
        let manifest = try store.manifest(snapshot)
        let file = try store.chunkedMemory(manifest)
        let id = manifest.id
        let system = MemoryFileSystem(
            file: file,
            describe: { "frame \($0) of snapshot \(id)'s memory" },
            log: { try? FileHandle.standardError.write(contentsOf: Data("stasis-memfs: \($0)\n".utf8)) })
        try system.run(at: URL(fileURLWithPath: mount), openTimeout: .seconds(openTimeout)) {
            // The restore that started this may be gone (killed): then nobody will open the file.
            guard (try? FileHandle.standardOutput.write(contentsOf: Data("ready\n".utf8))) != nil else { return false }
            // Close the pipe the restore waits on: it reads until end of file.
            let null = open("/dev/null", O_WRONLY)
            if null >= 0 { dup2(null, STDOUT_FILENO); close(null) }
            return true
        }
        try? FileHandle.standardError.write(contentsOf: Data("stasis-memfs: done, \(system.framesRead) frames decompressed\n".utf8))
    }
}
