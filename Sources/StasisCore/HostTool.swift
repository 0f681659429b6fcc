import Foundation
import Subprocess

/// Runs a host program (qemu-img, mkfs.ext4, mmdebstrap, …) to completion and turns a failure
/// into a `StasisError` that names the program and shows the end of what it printed.
public enum HostTool {
    /// What a finished program printed.
    public struct Output: Sendable {
        public let standardOutput: String
        public let standardError: String
    }

    /// Runs `program` (a name looked up in PATH, or a path) with `arguments`; throws unless it exits 0.
    @discardableResult
    public static func run(
        _ program: String,
        _ arguments: [String],
        environment: [String: String] = [:],
        workingDirectory: URL? = nil,
        outputLimit: Int = 4 << 20
    ) async throws -> Output {
        let found = program.contains("/") ? (access(program, X_OK) == 0 ? program : nil) : which(program)
        guard let found else {
            throw StasisError(.missingDependency, "\(program) is not installed (or not executable): run scripts/setup.sh")
        }
        let executable: Executable = .path(.init(found))
        var env: Environment = .inherit
        if !environment.isEmpty {
            env = .inherit.updating(Dictionary(uniqueKeysWithValues: environment.map { (Environment.Key(stringLiteral: $0.key), Optional($0.value)) }))
        }
        let result: ExecutionResult<Void, StringOutput<UTF8>, StringOutput<UTF8>>
        do {
            result = try await Subprocess.run(
                executable,
                arguments: Arguments(arguments),
                environment: env,
                workingDirectory: workingDirectory.map { .init($0.path) },
                output: .string(limit: outputLimit),
                error: .string(limit: outputLimit)
            )
        } catch {
            throw StasisError(.toolFailed, "running \(program) failed", cause: error)
        }
        let output = Output(standardOutput: result.standardOutput, standardError: result.standardError)
        guard result.terminationStatus.isSuccess else {
            let tail = output.standardError.split(separator: "\n").suffix(8).joined(separator: "\n")
            throw StasisError(
                .toolFailed,
                "\(program) \(arguments.prefix(3).joined(separator: " ")) failed (\(result.terminationStatus))\(tail.isEmpty ? "" : ":\n\(tail)")")
        }
        return output
    }

    /// The absolute path of `program` in PATH, or nil.
    public static func which(_ program: String, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> String? {
        let dirs = (path ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(separator: ":")
        for dir in dirs + ["/usr/sbin", "/sbin"] {
            let candidate = "\(dir)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

