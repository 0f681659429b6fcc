/// Deterministic filler text for the context benchmark: words and shell-output lines drawn by a
/// seeded generator (SplitMix64), so every run, and the LangGraph peer, stores the same bytes.
struct SeededText {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    private static let words = [
        "the", "build", "test", "file", "function", "error", "module", "swift", "package", "fix", "run", "check",
        "output", "line", "value", "config", "server", "request", "session", "log", "path", "import", "return",
        "failed", "passed", "warning", "update", "change", "source", "directory", "command", "result", "expected",
        "found", "missing", "type", "argument", "index", "commit", "branch", "merge", "install", "dependency",
    ]

    private static let commands = [
        "ls -la src", "swift build 2>&1 | tail -40", "git status --short", "cat Package.swift", "grep -rn TODO Sources",
        "python3 -m pytest -q tests", "make -j2 2>&1 | tail -30", "git diff --stat", "find . -name '*.swift' | head",
    ]

    /// The next pseudo-random number (SplitMix64).
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `range`.
    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }

    /// Sentences of words, about `bytes` long.
    mutating func prose(_ bytes: Int) -> String {
        var out = ""
        while out.utf8.count < bytes {
            var word = Self.words[int(0 ... Self.words.count - 1)]
            if out.isEmpty || out.hasSuffix(". ") { word = word.prefix(1).uppercased() + word.dropFirst() }
            out += word
            out += int(0 ... 9) == 0 ? ". " : " "
        }
        return String(out.prefix(bytes))
    }

    /// A shell command an agent might run.
    mutating func command() -> String {
        Self.commands[int(0 ... Self.commands.count - 1)]
    }

    /// Lines that look like a listing or a compiler's output, about `bytes` long.
    mutating func shellOutput(_ bytes: Int) -> String {
        var out = ""
        while out.utf8.count < bytes {
            switch int(0 ... 2) {
            case 0:
                out += "-rw-r--r-- 1 root root \(int(100 ... 99999)) Nov 27 17:\(int(10 ... 59)) \(Self.words[int(0 ... 20)])_\(int(1 ... 99)).swift\n"
            case 1:
                out += "Sources/\(Self.words[int(0 ... 20)])/\(Self.words[int(21 ... 40)]).swift:\(int(1 ... 400)):\(int(1 ... 80)): "
                out += "warning: \(prose(int(30 ... 70)))\n"
            default:
                out += "[\(int(1 ... 400))/\(int(400 ... 800))] Compiling \(Self.words[int(0 ... 40)]) \(Self.words[int(0 ... 40)]).swift\n"
            }
        }
        return String(out.prefix(bytes))
    }

    /// Lowercase hex digits, `count` of them.
    mutating func hex(_ count: Int) -> String {
        let digits = Array("0123456789abcdef")
        return String((0 ..< count).map { _ in digits[int(0 ... 15)] })
    }

    /// A UUID-shaped lowercase string (the turn ids Session makes).
    mutating func uuid() -> String {
        "\(hex(8))-\(hex(4))-4\(hex(3))-a\(hex(3))-\(hex(12))"
    }
}
