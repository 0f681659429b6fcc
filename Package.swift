// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Stasis",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "stasis", targets: ["stasis"]),
        .executable(name: "stasis-init", targets: ["stasis-init"]),
        .executable(name: "stasis-bench", targets: ["stasis-bench"]),
        .library(name: "Machines", targets: ["Machines"]),
        .library(name: "Images", targets: ["Images"]),
        .library(name: "Snapshots", targets: ["Snapshots"]),
        .library(name: "Replay", targets: ["Replay"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        // C shim: variadic ioctl, mount, module loading, process spawning, and the /proc constructor.
        .target(name: "CStasis"),
        // Errors, $STASIS_HOME layout, atomic writes, host tools. Foundation allowed (host only).
        .target(
            name: "StasisCore",
            dependencies: [
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // Kernel, initramfs, root filesystems and disk images.
        .target(name: "Images", dependencies: ["StasisCore"]),
        // The host<->guest agent protocol. No Foundation: it is linked into the static guest agent.
        .target(name: "Guest"),
        // The guest agent's logic (PID 1 in the initramfs). No Foundation.
        .target(name: "GuestAgent", dependencies: ["Guest", "CStasis"]),
        .executableTarget(name: "stasis-init", dependencies: ["GuestAgent"]),
        // Machine engines (QEMU), QMP and agent clients, the Machine actor and its store.
        .target(
            name: "Machines",
            dependencies: [
                "StasisCore", "Images", "Guest", "CStasis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Snapshots of running machines: manifest, checksums, restore and fork.
        .target(name: "Snapshots", dependencies: ["StasisCore", "Machines", "Guest"]),
        .executableTarget(
            name: "stasis",
            dependencies: [
                "StasisCore", "Images", "Machines", "Guest", "Snapshots",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "stasis-bench",
            dependencies: [
                "StasisCore", "Images", "Machines", "Guest", "Snapshots",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Durable workflows: journaled steps in SQLite, re-execution on resume.
        .target(
            name: "Replay",
            dependencies: ["StasisCore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // Runs one Replay workflow for the crash-recovery tests.
        .executableTarget(name: "stasis-replay-worker", dependencies: ["Replay", "StasisCore"]),
        .testTarget(name: "ReplayTests", dependencies: ["Replay", "StasisCore", "stasis-replay-worker"]),
        .testTarget(name: "StasisCoreTests", dependencies: ["StasisCore"]),
        .testTarget(name: "GuestTests", dependencies: ["Guest"]),
        .testTarget(name: "ImagesTests", dependencies: ["Images", "StasisCore"]),
        // Machines and snapshots share one fixture of booted VMs.
        .testTarget(name: "MachinesTests", dependencies: ["Machines", "Snapshots", "Images", "StasisCore", "Guest"]),
    ]
)
