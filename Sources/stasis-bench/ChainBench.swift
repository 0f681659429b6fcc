import ArgumentParser
import ChunkStore
import Foundation
import Guest
import Machines
import Snapshots
import StasisCore

/// `stasis-bench chain`: a session's snapshots over a long life. One machine started from the
/// image's boot snapshot writes a little and is snapshotted (leaving it running, as every turn
/// is) N times: what the N snapshots cost the store against one full snapshot plus what they
/// wrote, and whether the N-th restores as fast as the first.
struct ChainBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chain",
        abstract: "N snapshots of one session: stored bytes against one full snapshot plus their changes; restore of the N-th against the first.",
        discussion: """
        In a fresh temporary $STASIS_HOME (sharing the real one's kernel, guest agent and image): \
        boot the image (--network none), prewarm it as warm start does and take its boot \
        snapshot: the full snapshot. Restore it as one machine, then N times: write \
        --change-bytes from /dev/urandom to a new file on its disk, snapshot it with \
        --leave-running (a turn snapshot); every --suspend-every snapshots, snapshot it without \
        (the session's idle suspend) and restore that, as the session's next message would. Stored bytes are what the home's chunks/ and \
        snapshots/ folders allocate, before and after. Then restore the first and the N-th \
        snapshot in turn, --restores times each, timing restore to the first answered exec.
        """
    )

    @Option(help: "Snapshots in the chain.") var snapshots = 100
    @Option(help: "Image to boot.") var image = "debian"
    @Option(help: ArgumentHelp("Guest memory.", valueName: "SIZE")) var memory = "512M"
    @Option(help: "Incompressible bytes written to the guest's disk before each snapshot.") var changeBytes = 65536
    @Option(help: "Timed restores of the first and of the last snapshot.") var restores = 5
    @Option(help: "Every this many snapshots, suspend (stop-mode snapshot) and restore, as an idle session does.")
    var suspendEvery = 10
    @Flag(inversion: .prefixedNo, help: "Boot the guest with init_on_free=1, as `stasis run` does by default.") var zeroFreedMemory = true
    @Flag(inversion: .prefixedNo, help: "Boot the guest with deferred writeback, as `stasis run` does by default.") var deferWriteback = true
    @Flag(help: "After each write, sync the file and drop its pages from the guest's page cache (GNU dd iflag=nocache): what the store would gain if turn snapshots did that for the files a turn wrote.")
    var dropWrittenCache = false
    @Flag(help: "Keep the chain's $STASIS_HOME where it is afterwards (its path is printed), to inspect or profile its snapshots with STASIS_HOME=PATH stasis … (snapshot disks name their backing files by absolute path, so it cannot move).")
    var keepHome = false
    @Flag(help: "Print JSON on stdout (the table goes to stderr).") var json = false

    func validate() throws {
        if snapshots < 2 { throw ValidationError("--snapshots must be at least 2") }
        if restores < 1 { throw ValidationError("--restores must be at least 1") }
        if changeBytes < 0 { throw ValidationError("--change-bytes cannot be negative") }
        if suspendEvery < 1 { throw ValidationError("--suspend-every must be at least 1") }
        _ = try MachineSpec.parseMemory(memory)
    }

    struct Report: BenchReport {
        var image: String
        var memoryMiB: Int
        var snapshots: Int
        var changeBytes: Int
        /// The boot snapshot: RAM frames, device state and disk, as allocated.
        var fullSnapshotBytes: Int
        /// What the chain added to chunks/ and snapshots/.
        var chainBytes: Int
        /// Parts of it, summed over the chain's manifests.
        var memoryAddedBytes: Int
        var stateBytes: Int
        var diskBytes: Int
        /// What the chain added to chunks/ and snapshots/, by kind of file.
        var storedByKind: [String: StoredKind]
        /// The base frame lists and base device states the chain's deltas are over (their
        /// chunks are part of `chunks`).
        var baseLists: StoredKind
        var baseStates: StoredKind
        /// Snapshots whose disk is their parent's file (the guest wrote nothing to its disk).
        var sharedDisks: Int
        var takeMs: Summary
        var firstRestoreMs: Summary
        var lastRestoreMs: Summary
        /// Where a restore of the first and the last snapshot differ.
        var first: RestoreShape
        var last: RestoreShape
        /// The same restores step by step (`StagedRestore`), medians.
        var firstStages: RestoreStages
        var lastStages: RestoreStages
        var command: String

        /// What a restore of one snapshot has to do before QEMU runs.
        struct RestoreShape: Encodable {
            /// Non-zero RAM frames written, and how many of them are a chunk plus page patches.
            var frames: Int
            var patchedFrames: Int
            /// Writing the RAM file from the store alone (median, ms).
            var materializeMs: Double
            /// Snapshot disk layers QEMU opens (the snapshot's own and those below it).
            var diskLayers: Int
        }

        var budget: Double { 1.2 * Double(fullSnapshotBytes) + Double(snapshots * changeBytes) }

        func render() -> String {
            func mb(_ bytes: Int) -> String { fmt(Double(bytes) / 1_000_000, 2) }
            func verdict(_ ok: Bool) -> String { ok ? "MET" : "MISSED" }
            let restoreRatio = lastRestoreMs.median / firstRestoreMs.median
            return """
            stasis-bench chain: \(image), \(memoryMiB) MiB guest, \(snapshots) snapshots of one machine, \(changeBytes) random bytes written before each (medians; MB = 10^6 bytes)
            \(table(["measure", "stasis", "baseline", "ratio", "target", ""], [
                ["\(snapshots) snapshots stored (MB)", mb(chainBytes), "1.2 × full + changes: \(fmt(budget / 1_000_000, 2))",
                 fmt(Double(chainBytes) / budget, 2), "≤ 1.0", verdict(Double(chainBytes) <= budget)],
                ["  RAM frames added (MB)", mb(memoryAddedBytes), "", "", "", ""],
                ["  device state (MB)", mb(stateBytes), "", "", "", ""],
                ["  disk layers (MB)", mb(diskBytes), "changes: \(mb(snapshots * changeBytes))", "", "", ""],
            ] + storedByKind.sorted { $0.value.bytes > $1.value.bytes }.filter { $0.value.bytes != 0 }.map { kind, stored in
                ["  in \(kind) (MB, files)", mb(stored.bytes), "\(stored.files) files", "", "", ""]
            } + [
                ["  base frame lists, base states (MB)", mb(baseLists.bytes), "\(baseLists.files) lists, \(baseStates.files) states: \(mb(baseStates.bytes))", "", "", ""],
                ["  snapshots sharing their parent's disk", "\(sharedDisks)", "of \(snapshots)", "", "", ""],
                ["full snapshot: the boot snapshot (MB)", mb(fullSnapshotBytes), "", "", "", ""],
                ["snapshot taken, --leave-running (ms)", fmt(takeMs.median), "", "", "", ""],
                ["restore → first exec, snapshot \(snapshots) (ms)", fmt(lastRestoreMs.median), "snapshot 1: \(fmt(firstRestoreMs.median))",
                 fmt(restoreRatio, 2), "≤ 1.10", verdict(restoreRatio <= 1.10)],
                ["  RAM written from the store (ms)", fmt(last.materializeMs), "snapshot 1: \(fmt(first.materializeMs))", fmt(last.materializeMs / first.materializeMs, 2), "", ""],
                ["  non-zero frames (patched)", "\(last.frames) (\(last.patchedFrames))", "snapshot 1: \(first.frames) (\(first.patchedFrames))", "", "", ""],
                ["  disk layers opened", "\(last.diskLayers)", "snapshot 1: \(first.diskLayers)", "", "", ""],
            ]))

            Where the time goes: the same restores step by step (medians of \(firstStages.runs) staged rounds, ms)
            \(table(["stage", "snapshot 1", "snapshot \(snapshots)", "difference"], stageRows))
            \(command)
            """
        }

        /// Each restore stage of snapshot 1 and N side by side, then what QEMU did after `cont`.
        var stageRows: [[String]] {
            let a = firstStages, b = lastStages
            func row(_ name: String, _ f: (RestoreStages) -> Double) -> [String] {
                [name, fmt(f(a), 1), fmt(f(b), 1), fmt(f(b) - f(a), 1)]
            }
            return [
                row("find (manifest, frame list decoded)") { $0.find },
                row("verify (parts and their checksums)") { $0.verify },
                row("compatibility (QEMU, device layout, kernel)") { $0.compatibility },
                row("record + disk overlay") { $0.recordAndOverlay },
                row("RAM written from the store") { $0.ramCopy },
                row("device state put back together") { $0.stateWrite },
                row("QEMU process start") { $0.qemuStart },
                row("device state loaded") { $0.deviceStateLoaded + $0.cont },
                row("agent: hello, clock, RNG, hostname, generation") { $0.agentSteps },
                row("first answered exec") { $0.firstExec },
                row("total") { $0.total },
                row("  QEMU CPU in the agent steps + first exec") { $0.agentWork.qemuCPU + $0.firstExecWork.qemuCPU },
                row("  guest pages first touched (minor faults)") { $0.agentWork.minorFaults + $0.firstExecWork.minorFaults },
                row("  guest code blocks translated (TBs)") { $0.agentWork.translatedBlocks + $0.firstExecWork.translatedBlocks },
            ]
        }
    }

    func run() async throws {
        let memoryMiB = try MachineSpec.parseMemory(memory)
        let command = "stasis-bench chain --snapshots \(snapshots) --image \(image) --memory \(memory) --change-bytes \(changeBytes) --restores \(restores) --suspend-every \(suspendEvery)" + (zeroFreedMemory ? "" : " --no-zero-freed-memory") + (deferWriteback ? "" : " --no-defer-writeback") + (dropWrittenCache ? " --drop-written-cache" : "")
        try await BenchRun.main(json: json, quietTimeout: 60) { run, _ in
            try await measure(run, memoryMiB: memoryMiB, command: command)
        }
    }

    private func measure(_ run: BenchRun, memoryMiB: Int, command: String) async throws -> Report {
        let (home, source) = try await StasisGuest.bootInFreshHome(run, folder: run.work.appendingPathComponent("chain"), prefix: "chain-",
                                                                   image: image, memoryMiB: memoryMiB, idle: 2, zeroFreedMemory: zeroFreedMemory, deferWriteback: deferWriteback)
        await WarmStart.prewarm(source)
        let snapshotter = Snapshotter(home: home)
        let bootSnapshot = try await snapshotter.take(source, tag: "boot", leaveRunning: false)
        try await source.remove(force: true)
        let fullFiles = Self.storedFiles(home)
        let full = fullFiles.values.reduce(0) { $0 + $1.bytes }
        progress("boot snapshot: \(full) B stored")

        var machine = try await snapshotter.restore(bootSnapshot.id, name: "chain-session")
        let clock = ContinuousClock()
        var chain: [SnapshotManifest] = []
        var takeMs: [Double] = []
        for i in 1 ... snapshots {
            let status = try await machine.withAgent(timeout: .seconds(60)) { agent in
                let file = "/root/change-\(i)"
                let drop = dropWrittenCache ? " && sync \(file) && dd if=\(file) iflag=nocache count=0 status=none" : ""
                return try await agent.run(ExecRequest(argv: ["sh", "-c", "head -c \(changeBytes) /dev/urandom > \(file)\(drop)"])).status.shellCode
            }
            guard status == 0 else { throw StasisError(.guestFailure, "writing change \(i) exited \(status)") }
            let start = clock.now
            let suspend = i % suspendEvery == 0
            chain.append(try await snapshotter.take(machine, tag: "chain-\(i)", leaveRunning: !suspend))
            takeMs.append((clock.now - start).milliseconds)
            if suspend {
                try await machine.remove(force: true)
                machine = try await snapshotter.restore(chain[chain.count - 1].id, name: "chain-session")
            }
            if i % 10 == 0 || i == snapshots { progress("  \(i) of \(snapshots) snapshots, median \(fmt(Summary(takeMs).median)) ms each") }
        }
        try await machine.remove(force: true)
        let chainFiles = Self.storedFiles(home)
        let chainBytes = chainFiles.values.reduce(0) { $0 + $1.bytes } - full
        var added: [String: StoredKind] = [:]
        for (kind, now) in chainFiles {
            let before = fullFiles[kind] ?? StoredKind()
            added[kind] = StoredKind(files: now.files - before.files, bytes: now.bytes - before.bytes)
        }

        var first: [Double] = []
        var last: [Double] = []
        guard let firstID = chain.first?.id, let lastID = chain.last?.id else { throw StasisError(.internalError, "empty chain") }
        for round in 1 ... restores {
            for (id, into) in [(firstID, 0), (lastID, 1)] {
                let ms = try await StasisGuest.restoreToExec(snapshotter, snapshot: id, name: "chain-restored")
                if into == 0 { first.append(ms) } else { last.append(ms) }
            }
            progress("  restore round \(round): first \(fmt(first.last ?? 0)) ms, last \(fmt(last.last ?? 0)) ms")
        }
        var staged: [[RestoreStages]] = [[], []]
        for round in 1 ... restores {
            for (id, into) in [(firstID, 0), (lastID, 1)] {
                let (stages, machine) = try await StagedRestore.run(snapshotter, id: id, name: "chain-staged")
                try await machine.remove(force: true)
                staged[into].append(stages)
            }
            progress("  staged restore round \(round): first \(fmt(staged[0].last?.total ?? 0)) ms, last \(fmt(staged[1].last?.total ?? 0)) ms")
        }
        var shapes: [Report.RestoreShape] = []
        for id in [firstID, lastID] { shapes.append(try await Self.shape(of: id, snapshots: snapshotter.snapshots, work: run.work, runs: restores)) }
        if keepHome {
            Cleanup.shared.release(folder: run.work)
            Cleanup.shared.releaseSnapshots()
            progress("kept the chain's home: STASIS_HOME=\(home.root.path) (snapshot 1 is \(firstID), snapshot \(snapshots) is \(lastID)); remove \(run.work.path) when done")
        }
        return Report(
            image: image, memoryMiB: memoryMiB, snapshots: snapshots, changeBytes: changeBytes, fullSnapshotBytes: full,
            chainBytes: chainBytes, memoryAddedBytes: chain.reduce(0) { $0 + ($1.memoryAddedBytes ?? 0) },
            stateBytes: chain.reduce(0) { $0 + Int($1.stateStoredBytes) }, diskBytes: chain.reduce(0) { $0 + Int($1.disk.allocated) },
            storedByKind: added, baseLists: Self.distinct(chain.compactMap(\.memoryFramesBase)),
            baseStates: Self.distinct(chain.compactMap(\.stateBase)), sharedDisks: chain.filter { $0.disk.allocated == 0 }.count, takeMs: Summary(takeMs), firstRestoreMs: Summary(first), lastRestoreMs: Summary(last),
            first: shapes[0], last: shapes[1], firstStages: .median(staged[0]), lastStages: .median(staged[1]), command: command)
    }

    /// The frames, disk layers and RAM-writing time of one snapshot's restore.
    static func shape(of id: String, snapshots: SnapshotStore, work: URL, runs: Int) async throws -> Report.RestoreShape {
        let manifest = try snapshots.manifest(id)
        let scratch = work.appendingPathComponent("materialize-\(id)")
        var times: [Double] = []
        let clock = ContinuousClock()
        for _ in 1 ... runs {
            let start = clock.now
            try await runBlocking { try snapshots.materializeMemory(manifest, to: scratch) }
            times.append((clock.now - start).milliseconds)
            try FileManager.default.removeItem(at: scratch)
        }
        return .init(frames: manifest.memoryFrames?.nonZeroFrames.count ?? 0, patchedFrames: manifest.memoryFrames?.patchedFrames ?? 0,
                     materializeMs: Summary(times).median, diskLayers: 1 + snapshots.diskLayers(onto: manifest.diskBase).layers.count)
    }

    /// Distinct chunks among `refs`, and their stored bytes.
    static func distinct(_ refs: [ChunkRef]) -> StoredKind {
        let unique = Set(refs)
        return StoredKind(files: unique.count, bytes: unique.reduce(0) { $0 + $1.storedSize })
    }

    /// Bytes allocated under the home's chunks/ and snapshots/ (RAM caches for forks left out).
    static func storedBytes(_ home: StasisHome) -> Int { storedFiles(home).values.reduce(0) { $0 + $1.bytes } }

    /// What one kind of stored file allocates, and how many files of it there are.
    struct StoredKind: Encodable, Equatable {
        var files = 0
        var bytes = 0
    }

    /// Allocated bytes under chunks/ and snapshots/ by kind of file: chunks (whole frames, base
    /// frame lists and base device states), packs of page patches, and each file of a snapshot's
    /// folder by its name (manifest.json, memory.frames, state, disk.qcow2, …).
    static func storedFiles(_ home: StasisHome) -> [String: StoredKind] {
        var kinds: [String: StoredKind] = [:]
        var seen = Set<[UInt64]>()  // a hard-linked file (a snapshot sharing its parent's disk) counts once
        for (folder, isChunks) in [(home.root.appendingPathComponent("chunks"), true), (home.snapshots, false)] {
            guard let walker = FileManager.default.enumerator(atPath: folder.path) else { continue }
            while let name = walker.nextObject() as? String {
                guard !name.hasSuffix("memory.cache") else { continue }
                var st = stat()
                guard lstat(folder.appendingPathComponent(name).path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
                      seen.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted else { continue }
                let file = (name as NSString).lastPathComponent
                let kind = isChunks ? (name.hasPrefix("packs/") ? "chunks/packs" : "chunks") : "snapshots/*/" + file
                kinds[kind, default: StoredKind()].files += 1
                kinds[kind, default: StoredKind()].bytes += Int(st.st_blocks) * 512
            }
        }
        return kinds
    }
}
