// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Stasis",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "stasis", targets: ["stasis"]),
        .executable(name: "stasis-init", targets: ["stasis-init"]),
        .executable(name: "stasis-bench", targets: ["stasis-bench"]),
        .executable(name: "stasis-memfs", targets: ["stasis-memfs"]),
        .library(name: "Machines", targets: ["Machines"]),
        .library(name: "Images", targets: ["Images"]),
        .library(name: "Snapshots", targets: ["Snapshots"]),
        .library(name: "Replay", targets: ["Replay"]),
        .library(name: "Context", targets: ["Context"]),
        .library(name: "Models", targets: ["Models"]),
        .library(name: "Agents", targets: ["Agents"]),
        .library(name: "Server", targets: ["Server"]),
        .library(name: "ChunkStore", targets: ["ChunkStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C shim: variadic ioctl, mount, module loading, process spawning, and the /proc constructor.
        .target(name: "CStasis"),
        // Errors, $STASIS_HOME layout, atomic writes, host tools, durable SQLite. Foundation allowed (host only).
        .target(
            name: "StasisCore",
            dependencies: [
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
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
        .target(name: "Snapshots", dependencies: [
            "StasisCore", "Machines", "Images", "Guest", "ChunkStore", "LazyMemory",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(
            name: "stasis",
            dependencies: [
                "StasisCore", "Images", "Machines", "Guest", "Snapshots", "Context", "Models", "Agents", "Server", "LazyMemory",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "stasis-bench",
            dependencies: [
                "StasisCore", "Images", "Machines", "Guest", "Snapshots", "Context", "Replay", "Models", "Agents", "LazyMemory",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Durable workflows: journaled steps in SQLite, re-execution on resume.
        .target(
            name: "Replay",
            dependencies: ["StasisCore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // libzstd from Debian's libzstd-dev.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // Content-addressed store of independently compressed zstd frames; the zstd seekable format.
        .target(
            name: "ChunkStore",
            dependencies: ["CZstd", "StasisCore", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // libfuse3 from Debian's libfuse3-dev.
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // Lazy restore: a snapshot's RAM served through FUSE, a frame decompressed on first touch.
        .target(name: "LazyMemory", dependencies: ["CFuse", "CStasis", "ChunkStore", "StasisCore"]),
        // The per-machine process that serves lazily restored RAM.
        .executableTarget(
            name: "stasis-memfs",
            dependencies: ["LazyMemory", "Snapshots", "ChunkStore", "StasisCore",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The append-only session log: checksummed records in SQLite (WAL) through GRDB.
        .target(
            name: "Context",
            dependencies: [
                "StasisCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // LLM providers: the scripted model, OpenAI-compatible chat completions, Anthropic Messages.
        .target(
            name: "Models",
            dependencies: [
                "StasisCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Agent sessions: turn loop, tools in the machine, suspend on idle, resume on message.
        .target(
            name: "Agents",
            dependencies: [
                "StasisCore", "Context", "Models", "Machines", "Snapshots", "Guest", "Images", "Replay",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The HTTP API (Hummingbird) with server-sent events.
        .target(
            name: "Server",
            dependencies: [
                "StasisCore", "Context", "Agents", "Models", "Machines",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Runs one Replay workflow for the crash-recovery tests.
        .executableTarget(name: "stasis-replay-worker", dependencies: ["Replay", "StasisCore"]),
        .testTarget(name: "ReplayTests", dependencies: ["Replay", "StasisCore", "stasis-replay-worker", "Agents", "Models"]),
        .testTarget(name: "StasisCoreTests", dependencies: ["StasisCore"]),
        .testTarget(name: "ChunkStoreTests", dependencies: ["ChunkStore", "StasisCore"]),
        .testTarget(
            name: "ContextTests",
            dependencies: ["Context", "StasisCore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .testTarget(
            name: "ModelsTests",
            dependencies: [
                "Models", "StasisCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(name: "GuestTests", dependencies: ["Guest"]),
        .testTarget(name: "ImagesTests", dependencies: ["Images", "StasisCore"]),
        // Machines, snapshots, sessions and the server share one fixture of booted VMs.
        // Sessions and the server run on the same machines.
        .testTarget(
            name: "MachinesTests",
            dependencies: [
                "Machines", "Snapshots", "Images", "StasisCore", "Guest", "Context", "Models", "Agents", "Server", "ChunkStore",
                "LazyMemory", "stasis-memfs",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
    ]
)
