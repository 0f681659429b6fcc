import Foundation
import StasisCore

/// A guest kernel installed by scripts/fetch-kernel.sh in `kernel/<version>/`.
public struct KernelInfo: Codable, Sendable, Equatable {
    /// The kernel release, as `uname -r` reports it in the guest (e.g. 6.1.0-56-cloud-amd64).
    public let version: String
    /// The Debian package it came from.
    public let package: String
    /// That package's Debian version.
    public let packageVersion: String
    /// The versioned folder (never the `current` symlink, so a later refetch cannot move it).
    public let directory: URL

    /// Creates a description of a kernel installed in `directory`.
    public init(version: String, package: String, packageVersion: String, directory: URL) {
        self.version = version
        self.package = package
        self.packageVersion = packageVersion
        self.directory = directory
    }

    /// The uncompressed ELF kernel QEMU boots with -kernel.
    public var vmlinux: URL { directory.appendingPathComponent("vmlinux") }
    /// The package's lib/modules/<version> tree.
    public var modulesDirectory: URL { directory.appendingPathComponent("modules") }
    /// The kernel's build configuration.
    public var config: URL { directory.appendingPathComponent("config") }

    /// What kernel.json holds; the folder is where it was found.
    private struct Manifest: Codable {
        let version: String
        let package: String
        let packageVersion: String
    }

    /// The kernel `kernel/current` points at.
    public static func current(home: StasisHome) throws -> KernelInfo {
        let manifestURL = home.currentKernel.appendingPathComponent("kernel.json")
        guard FileManager.default.fileExists(atPath: manifestURL.path) else {
            throw StasisError(.missingDependency, "no guest kernel in \(home.kernels.path): run scripts/setup.sh")
        }
        let manifest = try AtomicFile.readJSON(Manifest.self, from: manifestURL)
        let directory = home.currentKernel.resolvingSymlinksInPath()
        return KernelInfo(version: manifest.version, package: manifest.package, packageVersion: manifest.packageVersion, directory: directory)
    }

    /// The value of a `CONFIG_…` option in this kernel's config ("y", "m", a string), or nil when
    /// it is unset.
    public func configValue(_ option: String) throws -> String? {
        let text: String
        do { text = try String(contentsOf: config, encoding: .utf8) } catch {
            throw StasisError(.notFound, "cannot read the kernel config \(config.path)", cause: error)
        }
        let prefix = option + "="
        for line in text.split(separator: "\n") where line.hasPrefix(prefix) {
            return String(line.dropFirst(prefix.count))
        }
        return nil
    }
}
