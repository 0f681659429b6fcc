import ArgumentParser
import Foundation
import Machines
import StasisCore

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a machine's console: kernel, guest agent, and output of commands run with -d."
    )

    @Flag(name: .shortAndLong, help: "Keep printing new output until the machine stops.")
    var follow = false

    @Option(name: [.customShort("n"), .long], help: "Show only the last N lines.")
    var tail: Int?

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The machine's name or id.")
    var machine: String

    func run() async throws {
        try await reportingErrors {
            let store = MachineStore(home: global.home)
            let record = try store.find(machine)
            let url = MachinePaths(home: global.home, id: record.id).console
            guard let handle = try? FileHandle(forReadingFrom: url) else {
                throw StasisError(.notFound, "machine \(record.name) has no console log yet")
            }
            defer { try? handle.close() }
            var data = handle.readDataToEndOfFile()
            if let tail {
                let lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
                data = Data(lines.suffix(tail + 1).joined(separator: [UInt8(ascii: "\n")]))
            }
            FileHandle.standardOutput.write(data)
            guard follow else { return }
            while true {
                let more = handle.readDataToEndOfFile()
                if !more.isEmpty { FileHandle.standardOutput.write(more); continue }
                if try !store.find(record.id).state.hasProcess { return }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}
