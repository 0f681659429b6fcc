import Foundation
import StasisCore

/// Everything needed to start a machine the same way again (on boot and, later, on restore).
public struct MachineSpec: Codable, Sendable, Equatable {
    /// The image whose disk the machine boots from.
    public var image: String
    /// Guest RAM in MiB.
    public var memoryMiB: Int
    /// Virtual CPUs.
    public var cpus: Int
    /// Inbound TCP forwards from the host to the guest.
    public var ports: [PortForward]
    /// What the guest may reach.
    public var network: NetworkMode
    /// Host services the guest may reach even when isolated.
    public var allowedHosts: [HostService]
    /// The accelerator asked for (`auto` picks one).
    public var accelerator: AcceleratorPreference
    /// Whether the guest kernel zeroes memory as it frees it (`init_on_free=1`), so what a
    /// finished process used is stored as nothing in the next snapshot instead of as changes.
    public var zeroFreedMemory: Bool
    /// Whether the guest keeps written data in its page cache until a program syncs it or it is
    /// an hour old, instead of writing it to disk within seconds: data a snapshot also holds in
    /// RAM is then not stored a second time in the snapshot's disk layer.
    public var deferWriteback: Bool

    public init(image: String, memoryMiB: Int = 512, cpus: Int = 1, ports: [PortForward] = [],
                network: NetworkMode = .isolated, allowedHosts: [HostService] = [], accelerator: AcceleratorPreference = .auto,
                zeroFreedMemory: Bool = true, deferWriteback: Bool = true) {
        self.image = image
        self.memoryMiB = memoryMiB
        self.cpus = cpus
        self.ports = ports
        self.network = network
        self.allowedHosts = allowedHosts
        self.accelerator = accelerator
        self.zeroFreedMemory = zeroFreedMemory
        self.deferWriteback = deferWriteback
    }

    private enum CodingKeys: String, CodingKey {
        case image, memoryMiB, cpus, ports, network, allowedHosts, accelerator, zeroFreedMemory, deferWriteback
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        image = try container.decode(String.self, forKey: .image)
        memoryMiB = try container.decode(Int.self, forKey: .memoryMiB)
        cpus = try container.decode(Int.self, forKey: .cpus)
        ports = try container.decode([PortForward].self, forKey: .ports)
        network = try container.decode(NetworkMode.self, forKey: .network)
        allowedHosts = try container.decode([HostService].self, forKey: .allowedHosts)
        accelerator = try container.decode(AcceleratorPreference.self, forKey: .accelerator)
        // Records and snapshots made before this setting booted without it.
        zeroFreedMemory = try container.decodeIfPresent(Bool.self, forKey: .zeroFreedMemory) ?? false
        deferWriteback = try container.decodeIfPresent(Bool.self, forKey: .deferWriteback) ?? false
    }

    /// Parses `512M`, `1G`, `2048` (MiB) into MiB.
    public static func parseMemory(_ text: String) throws -> Int {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let digits = t.prefix { $0.isASCII && $0.isNumber }
        let factor: Int
        switch t.dropFirst(digits.count) {
        case "", "M", "MB", "MIB": factor = 1
        case "G", "GB", "GIB": factor = 1024
        default:
            throw StasisError(.invalidArgument, "invalid memory size '\(text)': use a number of MiB or a size like 512M or 2G")
        }
        guard !digits.isEmpty else {
            throw StasisError(.invalidArgument, "invalid memory size '\(text)': use a number of MiB or a size like 512M or 2G")
        }
        let (mib, overflow) = (Int(digits) ?? .max).multipliedReportingOverflow(by: factor)
        guard !overflow, mib >= 64, mib <= 1 << 20 else {
            throw StasisError(.invalidArgument, "memory size '\(text)' is out of range: use 64M to 1024G, e.g. 512M or 2G")
        }
        return mib
    }
}

/// `-p [ADDR:]HOSTPORT:GUESTPORT`: a TCP port on the host forwarded into the guest.
public struct PortForward: Codable, Sendable, Equatable, CustomStringConvertible {
    public var hostAddress: String
    public var hostPort: UInt16
    public var guestPort: UInt16

    public init(hostAddress: String = "127.0.0.1", hostPort: UInt16, guestPort: UInt16) {
        self.hostAddress = hostAddress
        self.hostPort = hostPort
        self.guestPort = guestPort
    }

    /// Parses Docker's `-p` syntax: `8080:80`, `127.0.0.1:8080:80`, or `80` (same port both sides).
    public init(parsing text: String) throws {
        let parts = text.replacingOccurrences(of: "/tcp", with: "").split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        func port(_ s: String) throws -> UInt16 {
            guard let p = UInt16(s), p > 0 else {
                throw StasisError(.invalidArgument, "invalid port '\(s)' in -p \(text): use HOSTPORT:GUESTPORT, e.g. -p 8080:80")
            }
            return p
        }
        switch parts.count {
        case 1: self.init(hostPort: try port(parts[0]), guestPort: try port(parts[0]))
        case 2: self.init(hostPort: try port(parts[0]), guestPort: try port(parts[1]))
        case 3:
            let address = parts[0].isEmpty ? "127.0.0.1" : parts[0]
            var parsed = in_addr()
            guard inet_pton(AF_INET, address, &parsed) == 1 else {
                throw StasisError(.invalidArgument, "invalid address '\(address)' in -p \(text): use an IPv4 address, e.g. -p 127.0.0.1:8080:80")
            }
            self.init(hostAddress: address, hostPort: try port(parts[1]), guestPort: try port(parts[2]))
        default: throw StasisError(.invalidArgument, "invalid -p \(text): use [ADDR:]HOSTPORT:GUESTPORT, e.g. -p 8080:80")
        }
    }

    public var description: String { "\(hostAddress):\(hostPort)->\(guestPort)/tcp" }
}

/// What the guest's network can reach.
public enum NetworkMode: String, Codable, Sendable, CaseIterable {
    /// User networking with `restrict=on`: no route to the host or anywhere else; inbound forwards
    /// and allowed host services still work. The default.
    case isolated
    /// User networking without restriction: the guest reaches the host's loopback services and the
    /// whole network the host can reach.
    case outbound
    /// No network card at all.
    case none
}

/// `--allow-host ADDR:PORT`: one host TCP service the guest may reach at `guestAddress:port`.
public struct HostService: Codable, Sendable, Equatable, CustomStringConvertible {
    public var hostAddress: String
    public var port: UInt16
    /// Where the guest connects (10.0.2.100 and up).
    public var guestAddress: String

    public init(hostAddress: String, port: UInt16, guestAddress: String) {
        self.hostAddress = hostAddress
        self.port = port
        self.guestAddress = guestAddress
    }

    /// Parses `ADDR:PORT` or `PORT` (loopback).
    public static func parse(_ text: String, index: Int) throws -> HostService {
        let parts = text.split(separator: ":").map(String.init)
        let address = parts.count == 2 ? parts[0] : "127.0.0.1"
        guard parts.count <= 2, let port = UInt16(parts.last ?? ""), port > 0,
              address.allSatisfy({ $0.isNumber || $0 == "." || $0.isLetter || $0 == "-" }) else {
            throw StasisError(.invalidArgument, "invalid --allow-host \(text): use ADDR:PORT, e.g. --allow-host 127.0.0.1:8000")
        }
        return HostService(hostAddress: address, port: port, guestAddress: "10.0.2.\(100 + index)")
    }

    public var description: String { "\(guestAddress):\(port) -> host \(hostAddress):\(port)" }
}

/// The accelerator a user asked for.
public enum AcceleratorPreference: String, Codable, Sendable, CaseIterable {
    case auto, kvm, tcg
}

