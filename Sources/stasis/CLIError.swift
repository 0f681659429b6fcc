import ArgumentParser
import Foundation
import StasisCore

/// Exit codes, Docker's way: the command's own code passes through; these are stasis's.
enum ExitCodes {
    static let stasisFailed: Int32 = 125
    static let cannotInvoke: Int32 = 126
    static let notFound: Int32 = 127
}

/// Runs a command body, printing a StasisError as one clear line and exiting with 125.
func reportingErrors<R>(_ body: () async throws -> R) async throws -> R {
    do {
        return try await body()
    } catch let error as StasisError {
        printError(error.description)
        throw ExitCode(ExitCodes.stasisFailed)
    } catch let error as ExitCode {
        throw error
    } catch is CancellationError {
        throw ExitCode(130)
    } catch {
        printError("\(error)")
        throw ExitCode(ExitCodes.stasisFailed)
    }
}

/// Runs `body` for each name a user gave (Docker's `stop a b c`): a failure is reported and the
/// rest still run; the command fails at the end if any did.
func forEachReference(_ references: [String], _ body: (String) async throws -> Void) async throws {
    var failed = false
    for reference in references {
        do {
            try await body(reference)
        } catch let error as StasisError {
            printError(error.description)
            failed = true
        }
    }
    if failed { throw ExitCode(ExitCodes.stasisFailed) }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("stasis: \(message)\n".utf8))
}

/// Progress lines for long work go to stderr, so stdout stays clean for scripts.
func progress(_ message: String) {
    FileHandle.standardError.write(Data("\(message)\n".utf8))
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.dateEncodingStrategy = .iso8601
    FileHandle.standardOutput.write(try encoder.encode(value))
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Formats a table with left-aligned columns.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "   ")
    }.joined(separator: "\n")
}

