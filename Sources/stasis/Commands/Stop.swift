import ArgumentParser
import Foundation
import Machines
import StasisCore

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Shut machines down cleanly (disks synced); kill them after a timeout."
    )

    @Option(name: .shortAndLong, help: "Seconds to wait before killing.")
    var time: Double = 10

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Names or ids of the machines.")
    var machines: [String]

    func run() async throws {
        try await reportingErrors {
            let store = MachineStore(home: global.home)
            try await forEachReference(machines) { reference in
                let machine = try Machine.open(reference, store: store)
                try await machine.stop(timeout: .milliseconds(Int(time * 1000)))
                let record = await machine.record
                if record.autoRemove { try await machine.remove(force: true) }
                print(record.name)
            }
        }
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove machines (their disk overlay and run folder)."
    )

    @Flag(name: .shortAndLong, help: "Kill running machines first.")
    var force = false

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Names or ids of the machines.")
    var machines: [String]

    func run() async throws {
        try await reportingErrors {
            let store = MachineStore(home: global.home)
            try await forEachReference(machines) { reference in
                let machine = try Machine.open(reference, store: store)
                try await machine.remove(force: force)
                print(await machine.name)
            }
        }
    }
}
