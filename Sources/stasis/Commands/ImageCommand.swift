import ArgumentParser
import Foundation
import Images
import Machines
import Snapshots
import StasisCore

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Build, import, list and remove root filesystem images.",
        subcommands: [Build.self, Import.self, List.self, Rm.self]
    )

    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build a Debian image from Debian's packages (mmdebstrap, minbase variant)."
        )

        @Option(help: "Debian suite.")
        var debian = "bookworm"

        @Option(help: ArgumentHelp("Extra packages, comma-separated.", valueName: "PKG,PKG"))
        var packages: String = ""

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Name of the new image.")
        var name: String

        func run() async throws {
            try await reportingErrors {
                let list = packages.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                let start = Date()
                let record = try await ImageStore(home: global.home).buildDebian(name: name, suite: debian, packages: list) { progress($0) }
                try reportImage(record, global: global, seconds: Date().timeIntervalSince(start))
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Import a root filesystem: a folder, a tarball (plain, gzip, zstd), an OCI image layout, or a `docker save` tarball.",
            discussion: "Archives with absolute paths, '..' or links that escape the root are refused; nothing is left behind."
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Name of the new image.")
        var name: String

        @Argument(help: "The folder or archive.")
        var source: String

        func run() async throws {
            try await reportingErrors {
                let url = URL(fileURLWithPath: source)
                guard FileManager.default.fileExists(atPath: url.path) else {
                    throw StasisError(.notFound, "\(source) does not exist")
                }
                let start = Date()
                let record = try await ImageStore(home: global.home).importRootfs(name: name, from: url) { progress($0) }
                try reportImage(record, global: global, seconds: Date().timeIntervalSince(start))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List images.")
        @OptionGroup var global: GlobalOptions
        func run() async throws { try await listImages(global) }
    }

    struct Rm: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove images no machine uses.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Image names.")
        var names: [String]

        func run() async throws {
            try await reportingErrors {
                let machines = try MachineStore(home: global.home).list()
                let snapshots = try SnapshotStore(home: global.home).list()
                for name in names {
                    if let snapshot = snapshots.first(where: { $0.image == name }) {
                        throw StasisError(.invalidState, "image \(name) is the base of snapshot \(snapshot.id): remove its snapshots first (`stasis snapshot rm`)")
                    }
                    if let user = machines.first(where: { $0.spec.image == name }) {
                        throw StasisError(.invalidState, "image \(name) is used by machine \(user.name): remove it first (`stasis rm -f \(user.name)`)")
                    }
                    try await ImageStore(home: global.home).remove(named: name)
                    print(name)
                }
            }
        }
    }
}

struct Images: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List images (same as `stasis image ls`).")
    @OptionGroup var global: GlobalOptions
    func run() async throws { try await listImages(global) }
}

private func listImages(_ global: GlobalOptions) async throws {
    try await reportingErrors {
        let images = try await ImageStore(home: global.home).list()
        if global.json { return try printJSON(images) }
        print(table(["NAME", "SIZE", "DISK", "SOURCE", "CREATED"], images.map {
            [$0.name, bytes($0.contentBytes), bytes($0.diskBytes), $0.source, ago($0.created)]
        }))
    }
}

private func reportImage(_ record: ImageRecord, global: GlobalOptions, seconds: Double) throws {
    if global.json { return try printJSON(record) }
    progress(String(format: "image %@: %@ of files in a %@ disk, %.1f s", record.name, bytes(record.contentBytes), bytes(record.diskBytes), seconds))
    print(record.name)
}

func bytes(_ n: UInt64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var value = Double(n)
    var unit = 0
    while value >= 1000 && unit < units.count - 1 { value /= 1000; unit += 1 }
    return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
}
