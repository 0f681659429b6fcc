import Foundation
import StasisCore

extension ImageStore {
    /// Builds image `name` from Debian `suite` (e.g. "bookworm") with mmdebstrap's minbase variant
    /// plus `packages`, then imports the tarball like any other.
    public func buildDebian(name: String, suite: String, packages: [String], progress: @Sendable (String) -> Void) async throws -> ImageRecord {
        try Self.validateDebianWord(suite, what: "suite")
        for package in packages { try Self.validateDebianWord(package, what: "package name") }
        try reserve(name)
        defer { release(name) }
        return try await Self.makeImage(home: home, name: name, work: .debian(suite: suite, packages: packages), progress: progress)
    }

    /// The source label of a Debian image: "debian:bookworm +git,python3".
    static func debianLabel(suite: String, packages: [String]) -> String {
        packages.isEmpty ? "debian:\(suite)" : "debian:\(suite) +\(packages.joined(separator: ","))"
    }

    /// Runs mmdebstrap into `staging/debian.tar`, then extracts it into `staging/root`.
    static func stageDebian(suite: String, packages: [String], staging: URL, progress: @Sendable (String) -> Void) async throws -> (String, URL) {
        guard let mmdebstrap = HostTool.which("mmdebstrap") else {
            throw StasisError(.missingDependency, "mmdebstrap is not installed: apt-get install mmdebstrap (or run scripts/setup.sh)")
        }
        let tarball = staging.appendingPathComponent("debian.tar")
        var arguments = ["--variant=minbase"]
        // As root, unshare mode keeps mmdebstrap's mounts in a private namespace: if it is killed,
        // no /proc or /dev mount is left inside the staging folder for the cleanup to trip over.
        if geteuid() == 0 { arguments.append("--mode=unshare") }
        if !packages.isEmpty { arguments.append("--include=\(packages.joined(separator: ","))") }
        arguments += [suite, tarball.path]
        progress("mmdebstrap \(arguments.joined(separator: " ")) (needs Debian's mirror; takes about half a minute)")
        // TMPDIR inside staging: whatever mmdebstrap leaves if it is killed goes with the staging folder.
        try await HostTool.run(mmdebstrap, arguments, environment: ["TMPDIR": staging.path])
        let root = staging.appendingPathComponent("root", isDirectory: true)
        try createFolder(root)
        try extractRootfsArchive(tarball, into: root, progress: progress)
        // The tarball is no longer needed; dropping it now halves the peak disk use during mkfs.
        unlink(tarball.path)
        return (debianLabel(suite: suite, packages: packages), root)
    }

    /// Suites and package names go on mmdebstrap's command line: letters, digits and `+.-:=~` only,
    /// never a leading '-' that would read as an option.
    static func validateDebianWord(_ word: String, what: String) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789+.-:=~".utf8)
        guard let first = word.utf8.first, first != UInt8(ascii: "-"), word.utf8.count <= 128,
              word.utf8.allSatisfy({ allowed.contains($0) })
        else {
            throw StasisError(.invalidArgument, "invalid Debian \(what) '\(word)': use lowercase letters, digits and + . - : = ~, not starting with '-'")
        }
    }
}
