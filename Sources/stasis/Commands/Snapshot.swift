import ArgumentParser
import Foundation
import Machines
import Snapshots
import StasisCore

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Snapshot a running machine (memory, devices, disk, processes), or inspect and remove snapshots.",
        subcommands: [Create.self, Inspect.self, Rm.self, SnapshotsList.self, Export.self, Import.self],
        defaultSubcommand: Create.self
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Snapshot a running machine and print the snapshot's id.",
            discussion: "Without --leave-running the machine is stopped afterwards. With it, the guest pauses briefly and goes on, on a new disk overlay."
        )

        @Option(help: "A name to find the snapshot by.")
        var tag: String?

        @Flag(help: "Keep the machine running after the snapshot.")
        var leaveRunning = false

        @Flag(help: "First drop the guest's page cache and zero its free memory: a slower snapshot that stores only memory in use.")
        var compact = false

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The machine's name or id.")
        var machine: String

        func run() async throws {
            try await reportingErrors {
                let home = global.home
                let target = try Machine.open(machine, store: MachineStore(home: home))
                if compact { try await Snapshotter.compact(target) }
                let manifest = try await Snapshotter(home: home).take(target, tag: tag, leaveRunning: leaveRunning)
                if global.json { return try printJSON(manifest) }
                // A disk of 0 bytes is the parent's file, shared: the guest wrote nothing to it since.
                let disk = manifest.disk.allocated == 0 && manifest.parent != nil ? "no disk change" : bytes(manifest.disk.allocated) + " disk"
                progress(String(format: "snapshot of %@: guest paused %.0f ms, %@ state, %@ memory (%@ new), %@",
                                manifest.machineName, manifest.pausedMilliseconds, bytes(manifest.stateStoredBytes),
                                bytes(UInt64(manifest.memoryStoredBytes)), bytes(UInt64(manifest.memoryAddedBytes ?? 0)), disk))
                print(manifest.id)
            }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a snapshot's manifest (JSON).")

        @Flag(help: "Also check every part against its checksum.")
        var verify = false

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Snapshot id, id prefix or tag.")
        var snapshot: String

        func run() async throws {
            try await reportingErrors {
                let store = SnapshotStore(home: global.home)
                let manifest = try store.find(snapshot)
                if verify { try store.verify(manifest, deep: true) }
                try printJSON(manifest)
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a snapshot to one file that another host can import.",
            discussion: "The file is in the zstd seekable format over a tar stream: `zstd -d FILE | tar -t` lists it. Its disk holds what differs from the image, which the importing host must have."
        )

        @OptionGroup var global: GlobalOptions
        @Argument(help: "Snapshot id, id prefix or tag.") var snapshot: String
        @Argument(help: "The file to write (replaced if it exists).") var file: String

        func run() async throws {
            try await reportingErrors {
                let url = URL(fileURLWithPath: file)
                let summary = try await SnapshotArchive(home: global.home).export(snapshot, to: url)
                if global.json { return try printJSON(summary) }
                progress("snapshot \(summary.snapshot): \(bytes(summary.contentBytes)) in \(summary.frames) frames, \(bytes(summary.archiveBytes)) written")
                print(url.path)
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read a file made by `stasis snapshot export`; prints the snapshot's id.",
            discussion: "Every part is checked against the manifest's checksums before the snapshot appears. The snapshot's image must exist here under the same name."
        )

        @Option(help: "Tag the imported snapshot.") var tag: String?
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The archive file.") var file: String

        func run() async throws {
            try await reportingErrors {
                let manifest = try await SnapshotArchive(home: global.home).importArchive(from: URL(fileURLWithPath: file), tag: tag)
                if global.json { return try printJSON(manifest) }
                print(manifest.id)
            }
        }
    }

    struct Rm: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove snapshots no machine depends on.",
            discussion: "A snapshot other snapshots build on is refused unless --force, which first copies into each of them the data they need from it."
        )

        @Flag(name: .shortAndLong, help: "Make dependent snapshots stand alone, then remove.")
        var force = false

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Snapshot ids, id prefixes or tags.")
        var snapshots: [String]

        func run() async throws {
            try await reportingErrors {
                let store = SnapshotStore(home: global.home)
                let machines = try MachineStore(home: global.home).list()
                try await forEachReference(snapshots) { reference in
                    let manifest = try store.find(reference, frames: false)
                    try await store.remove(manifest.id, force: force, machines: machines)
                    print(manifest.id)
                }
            }
        }
    }
}

struct SnapshotsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List snapshots.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await reportingErrors {
            let all = try SnapshotStore(home: global.home).list()
            if global.json { return try printJSON(all) }
            print(table(["ID", "TAG", "MACHINE", "IMAGE", "PARENT", "MEMORY", "NEW", "DISK", "PAUSED", "CREATED"], all.map {
                [$0.id, $0.tag ?? "-", $0.machineName, $0.image, $0.parent ?? "-", bytes(UInt64($0.memoryStoredBytes)),
                 $0.memoryAddedBytes.map { bytes(UInt64($0)) } ?? "-",
                 bytes($0.disk.allocated), String(format: "%.0f ms", $0.pausedMilliseconds), ago($0.created)]
            }))
        }
    }
}

struct GC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Free stored RAM frames no snapshot uses, and RAM caches no machine maps.",
        discussion: "Safe to interrupt at any point: it waits for snapshots being written, and deletes only what no manifest lists."
    )

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await reportingErrors {
            let home = global.home
            let result = try await runBlocking {
                try SnapshotStore(home: home).collectGarbage(machines: { try MachineStore(home: home).list() })
            }
            if global.json { return try printJSON(result) }
            print("removed \(result.chunksRemoved) chunks and \(result.packsRemoved) packs (\(bytes(UInt64(result.bytesFreed)))) and \(result.cachesRemoved) RAM caches (\(bytes(UInt64(result.cacheBytesFreed)))); \(result.chunksKept) chunks in use")
        }
    }
}

struct DF: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "df",
        abstract: "Show what snapshots take on disk: logical against stored bytes, and the dedup ratio."
    )

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await reportingErrors {
            let usage = try SnapshotStore(home: global.home).usage()
            if global.json { return try printJSON(usage) }
            let damaged: [[String]] = usage.damagedSnapshots == 0 ? []
                : [["damaged snapshots", "\(usage.damagedSnapshots)", "frame list unreadable: counted from manifests; `stasis gc` names them"]]
            print(table(["WHAT", "BYTES", "NOTE"], [
                ["snapshots", "\(usage.snapshots)", ""],
            ] + damaged + [
                ["guest RAM described", bytes(UInt64(usage.memoryLogicalBytes)), "zeros included"],
                ["RAM frames, per snapshot", bytes(UInt64(usage.memoryReferencedBytes)), "each snapshot's frames counted alone"],
                ["RAM frames, stored", bytes(UInt64(usage.chunkStoreBytes)), "\(usage.chunks) chunks, dedup \(String(format: "%.1fx", usage.dedupRatio))"],
                ["device state and disks", bytes(UInt64(usage.stateAndDiskBytes)), ""],
                ["RAM caches for forks", bytes(UInt64(usage.cacheBytes)), "`stasis gc` drops unused ones"],
                ["total on disk", bytes(UInt64(usage.totalBytes)), ""],
            ]))
        }
    }
}

struct Snapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List snapshots (same as `stasis snapshot ls`).")
    @OptionGroup var global: GlobalOptions
    func run() async throws {
        var list = SnapshotsList()
        list.global = global
        try await list.run()
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bring a snapshot back as a running machine, exactly where it was.",
        discussion: """
        Every process, open file, listening socket, file on disk and byte of memory is as it was. \
        After the restore the guest clock is set, its RNG reseeded and its generation bumped \
        (/run/stasis/generation). TCP connections open at snapshot time do not survive; listening \
        sockets do. The snapshot itself is never modified.
        """
    )

    @Option(help: "Name of the new machine (default: generated).")
    var name: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("Forward a host TCP port into the guest (replaces the snapshot's).", valueName: "[ADDR:]HOSTPORT:GUESTPORT"))
    var publish: [String] = []

    @Flag(help: "Serve the RAM lazily: decompress each frame when the guest first touches it (needs /dev/fuse and stasis-memfs).")
    var lazy = false

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Snapshot id, id prefix or tag.")
    var snapshot: String

    func run() async throws {
        try await reportingErrors {
            let ports = publish.isEmpty ? nil : try publish.map { try PortForward(parsing: $0) }
            let clock = ContinuousClock()
            let start = clock.now
            let machine = try await Snapshotter(home: global.home).restore(snapshot, name: name, ports: ports, lazily: lazy)
            let record = await machine.record
            if global.json { return try printJSON(record) }
            progress("\(record.name) restored in \(String(format: "%.0f", (clock.now - start).milliseconds)) ms")
            print(record.name)
        }
    }
}

struct Fork: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start N independent machines from one snapshot (or from a running machine, snapshotted first).",
        discussion: "Forks share the snapshot's memory copy-on-write; each has its own disk overlay, network stack, hostname, clock and reseeded RNG, and no port forwards."
    )

    @Option(name: .shortAndLong, help: "How many machines.")
    var count = 1

    @Option(help: "Prefix of the new machines' names.")
    var name: String?

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A running machine, or a snapshot id, id prefix or tag.")
    var source: String

    func validate() throws {
        if count < 1 || count > 64 { throw ValidationError("--count must be between 1 and 64") }
    }

    func run() async throws {
        try await reportingErrors {
            let home = global.home
            let snapshotter = Snapshotter(home: home)
            var reference = source
            if let machine = try? Machine.open(source, store: MachineStore(home: home)), await machine.state == .running {
                reference = try await snapshotter.take(machine, tag: nil, leaveRunning: true).id
                progress("snapshot \(reference) of \(source)")
            }
            let clock = ContinuousClock()
            let start = clock.now
            let machines = try await snapshotter.fork(reference, count: count, namePrefix: name)
            var records: [MachineRecord] = []
            for m in machines { records.append(await m.record) }
            records.sort { $0.name < $1.name }
            if global.json { return try printJSON(records) }
            progress("\(records.count) machines running in \(String(format: "%.0f", (clock.now - start).milliseconds)) ms")
            for r in records { print(r.name) }
        }
    }
}
