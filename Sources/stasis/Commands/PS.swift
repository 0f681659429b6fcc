import ArgumentParser
import Foundation
import Machines
import StasisCore

struct PS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps",
        abstract: "List machines (running ones; -a for all).",
        discussion: "Records are checked against live processes: a machine whose QEMU died shows as failed."
    )

    @Flag(name: .shortAndLong, help: "Show stopped and failed machines too.")
    var all = false

    @Flag(name: .shortAndLong, help: "Print only names.")
    var quiet = false

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await reportingErrors {
            let machines = try MachineStore(home: global.home).list().filter { all || $0.state.hasProcess }
            if global.json { return try printJSON(machines) }
            if quiet { return machines.forEach { print($0.name) } }
            let rows = machines.map { m in
                [m.id, m.name, m.spec.image, m.state.rawValue, m.accelerator ?? "-", "\(m.spec.cpus)",
                 "\(m.spec.memoryMiB)M", m.spec.network.rawValue, m.spec.ports.map(\.description).joined(separator: ","),
                 ago(m.created)]
            }
            print(table(["ID", "NAME", "IMAGE", "STATE", "ACCEL", "CPUS", "MEMORY", "NETWORK", "PORTS", "CREATED"], rows))
            for m in machines where m.state == .failed {
                if let failure = m.failure?.split(separator: "\n").first { printError("\(m.name) failed: \(failure)") }
            }
        }
    }
}

func ago(_ date: Date) -> String {
    let s = Int(-date.timeIntervalSinceNow)
    if s < 60 { return "\(s)s ago" }
    if s < 3600 { return "\(s / 60)m ago" }
    if s < 86400 { return "\(s / 3600)h ago" }
    return "\(s / 86400)d ago"
}
