import Foundation
import StasisCore

/// The peer: the same agent loop on DBOS Transact (Python, SQLite), run by
/// scripts/bench/dbos_agent.py in its own processes. Skipped, with the reason, when Python or the
/// `dbos` package is missing or the script fails.
enum DBOSPeer {
    /// One N, as the script reports it.
    struct Row: Codable {
        var turns: Int
        var steps: Int
        /// The history was built with `PRAGMA synchronous=OFF` (to fit the time budget); the run's
        /// figures are then not comparable, its recoveries are.
        var unsyncedBuild: Bool
        var runSeconds: Double
        var runCPUSeconds: Double
        var bodySeconds: Double
        var stepOverheadMicros: Double
        /// A new process's DBOS() + launch() → its recovery thread reaches turn N + 1, per repetition.
        var recoveryMillis: [Double]
        var recoveryMedianMillis: Double
        /// The same from spawning the Python process (interpreter and `import dbos` included).
        var recoveryWithProcessMillis: Double
        var importMillis: Double
        var storedBytes: Int64
        var outputRows: Int
        var outputBytes: Int
    }

    /// What the script printed.
    struct Result: Codable {
        var dbosVersion: String
        var python: String
        var rows: [Row]
    }

    /// The peer's outcome: its results, or why there are none.
    struct Outcome: Encodable {
        var result: Result?
        var skipped: String?

        func row(_ turns: Int) -> Row? { result?.rows.first { $0.turns == turns } }
    }

    static func run(python: String, script: URL, turns: [Int], reps: String, work: URL, toolBytes: Int,
                    contextTurns: Int?, unsyncedAbove: Int) async -> Outcome {
        guard FileManager.default.fileExists(atPath: script.path) else {
            return Outcome(result: nil, skipped: "no script at \(script.path) (run from the repository's root or pass --dbos-script)")
        }
        let out = work.appendingPathComponent("dbos-out.json")
        let err = work.appendingPathComponent("dbos-err.txt")
        let arguments = [python, script.path, "bench", "--turns", turns.map(String.init).joined(separator: ","), "--reps", reps,
                         "--work", work.appendingPathComponent("dbos").path, "--tool-bytes", "\(toolBytes)",
                         "--context-turns", "\(contextTurns ?? 0)", "--unsynced-above", "\(unsyncedAbove)"]
        progress("DBOS peer: \(arguments.joined(separator: " "))")
        let status: Int32
        do {
            let child = try Child(URL(fileURLWithPath: "/usr/bin/env"), arguments, output: out, error: err)
            try child.start()
            status = await child.wait()
        } catch {
            return Outcome(result: nil, skipped: "could not start \(python): \(error)")
        }
        let errText = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
        for line in errText.split(separator: "\n") where line.hasPrefix("dbos N=") { progress("  \(line)") }
        let outData = (try? Data(contentsOf: out)) ?? Data()
        if status == 3, let object = try? JSONSerialization.jsonObject(with: outData) as? [String: Any], let why = object["error"] as? String {
            return Outcome(result: nil, skipped: why)
        }
        guard status == 0 else {
            return Outcome(result: nil, skipped: "\(python) \(script.lastPathComponent) exited \(status): \(errText.suffix(1500))")
        }
        do {
            return Outcome(result: try JSONDecoder().decode(Result.self, from: outData), skipped: nil)
        } catch {
            return Outcome(result: nil, skipped: "could not read the DBOS script's output: \(error)")
        }
    }
}
