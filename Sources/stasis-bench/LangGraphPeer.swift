import Foundation

/// Runs scripts/bench/langgraph_storage.py: LangGraph's SqliteSaver storing the same messages.
struct LangGraphPeer {
    static let install = "pip install langgraph langgraph-checkpoint-sqlite"
    static let scriptPath = "scripts/bench/langgraph_storage.py"

    var python: String
    var script: URL

    /// The peer, or nil (with the reason on stderr) if the script or LangGraph is missing.
    static func locate(python: String, script explicit: String?) async -> LangGraphPeer? {
        guard let script = explicit.map({ URL(fileURLWithPath: $0) }) ?? findScript() else {
            progress("LangGraph peer skipped: \(scriptPath) not found (run from the repository, or pass --langgraph-script)")
            return nil
        }
        let check = try? await run(python, ["-c", "import langgraph.graph, langgraph.checkpoint.sqlite"], folder: nil)
        guard check == 0 else {
            progress("LangGraph peer skipped: \(python) cannot import langgraph and langgraph.checkpoint.sqlite; install them with `\(python) -m \(install)` (or pass --python PATH)")
            return nil
        }
        return LangGraphPeer(python: python, script: script)
    }

    /// The script next to the benchmark's build folder (any parent of the executable) or in the
    /// current folder.
    private static func findScript() -> URL? {
        var folders = [URL(fileURLWithPath: FileManager.default.currentDirectoryPath)]
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while dir.path != "/" {
            folders.append(dir)
            dir = dir.deletingLastPathComponent()
        }
        return folders.map { $0.appendingPathComponent(scriptPath) }.first { FileManager.default.fileExists(atPath: $0.path) }
    }

    /// Runs the script on `session`'s messages; nil if it fails (its error output is shown).
    func measure(_ session: SyntheticSession, points: [Int], maxSeconds: Double, folder: URL) async throws -> LangGraphResult? {
        let input = folder.appendingPathComponent("langgraph-turns.json")
        try session.langGraphInput().write(to: input)
        let arguments = [script.path, "--messages", input.path, "--db", folder.appendingPathComponent("langgraph.sqlite").path,
                         "--points", points.map(String.init).joined(separator: ","), "--max-seconds", String(maxSeconds)]
        let status = try await Self.run(python, arguments, folder: folder)
        let errors = (try? String(contentsOf: folder.appendingPathComponent("langgraph.err"), encoding: .utf8)) ?? ""
        guard status == 0, let output = FileManager.default.contents(atPath: folder.appendingPathComponent("langgraph.out").path) else {
            progress("LangGraph peer failed (exit \(status)):\n\(errors)")
            return nil
        }
        if !errors.isEmpty { progress(errors.trimmingCharacters(in: .newlines)) }
        return try JSONDecoder().decode(LangGraphResult.self, from: output)
    }

    /// Runs `python arguments` (found on PATH), output to `folder`/langgraph.out and .err if given.
    private static func run(_ python: String, _ arguments: [String], folder: URL?) async throws -> Int32 {
        let child = try Child(URL(fileURLWithPath: "/usr/bin/env"), [python] + arguments,
                              output: folder?.appendingPathComponent("langgraph.out"), error: folder?.appendingPathComponent("langgraph.err"))
        try child.start()
        return await child.wait()
    }
}
