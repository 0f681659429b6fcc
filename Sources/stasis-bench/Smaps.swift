import Foundation
import StasisCore

/// Host memory of one QEMU process, from /proc/PID/smaps, in MiB.
///
/// What counts: Rss is the memory resident in the process's page tables right now: anonymous
/// pages (heap, stacks, TCG's translated-code buffer, device state), pages of mapped files (the
/// qemu binary and its shared libraries), and the guest's RAM, which Stasis maps from the
/// machine's `memory` file (memory-backend-file, share=on), so that a snapshot need not copy it.
/// Guest RAM is what the guest has touched, never more than --memory; QEMU cannot make it smaller
/// without the guest's help (balloon). Everything else, total Rss minus the Rss of the `memory`
/// mapping(s), is QEMU's own overhead per machine, which is what the target bounds.
///
/// Rss over-counts mapped files: their pages are page cache, shared with every other process that
/// maps them (all machines booted from one kernel share its pages), clean and reclaimable. So the
/// file parts are also given as Pss (proportional share). Swapped-out pages are not counted (this
/// host has no swap in use).
struct QEMUMemory: Encodable {
    /// Total Rss of the process.
    var totalRss: Double
    /// Rss of the guest RAM file's mapping: guest RAM the guest has touched.
    var guestRAM: Double
    /// totalRss − guestRAM.
    var overhead: Double
    /// Parts of the overhead: TCG's translation buffer (the anonymous executable mapping; absent
    /// under KVM); other anonymous memory (heap, stacks, device state: QEMU's truly private
    /// memory); the kernel and initramfs files, which QEMU maps to load them and keeps mapped
    /// as ROM images for a reset; and the qemu binary with its shared libraries.
    var tcgCodeBuffer: Double
    var otherAnonymous: Double
    var bootImages: Double
    var bootImagesPss: Double
    var qemuAndLibraries: Double
    var qemuAndLibrariesPss: Double
    /// Blocks allocated to the guest RAM file on disk (the guest's touched RAM as the file system
    /// sees it), for comparison with `guestRAM`.
    var guestRAMFileAllocated: Double

    static func read(pid: Int32, memoryFile: URL, bootFiles: [URL]) throws -> QEMUMemory {
        // Read to the end: /proc files report size 0, and a one-shot read gets only the first page.
        guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps"),
              let data = try? handle.readToEnd() else {
            throw StasisError(.ioFailure, "cannot read /proc/\(pid)/smaps")
        }
        try? handle.close()
        let text = String(decoding: data, as: UTF8.self)
        enum Kind { case guest, code, anon, boot, file }
        let bootPaths = Set(bootFiles.map { $0.resolvingSymlinksInPath().path } + bootFiles.map(\.path))
        var kind = Kind.anon
        var total = 0, guest = 0, code = 0, anon = 0, boot = 0, bootPss = 0, file = 0, filePss = 0
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.contains("-"), first.first?.isHexDigit == true, fields.count >= 5 {
                // A mapping header: start-end perms offset dev inode [path]
                let perms = fields[1]
                let path = fields.count >= 6 ? fields[5...].joined(separator: " ") : ""
                if path == memoryFile.path {
                    kind = .guest
                } else if bootPaths.contains(path) {
                    kind = .boot
                } else if path.hasPrefix("/") {
                    kind = .file
                } else if perms.contains("x") && path.isEmpty {
                    kind = .code
                } else {
                    kind = .anon
                }
                continue
            }
            guard fields.count >= 2, let kb = Int(fields[1]) else { continue }
            if first == "Rss:" {
                total += kb
                switch kind {
                case .guest: guest += kb
                case .code: code += kb
                case .anon: anon += kb
                case .boot: boot += kb
                case .file: file += kb
                }
            } else if first == "Pss:" {
                if kind == .file { filePss += kb }
                if kind == .boot { bootPss += kb }
            }
        }
        var allocated = Double.nan
        var st = stat()
        if stat(memoryFile.path, &st) == 0 { allocated = Double(st.st_blocks) * 512 / 1_048_576 }
        let mib = { (kb: Int) in Double(kb) / 1024 }
        return QEMUMemory(totalRss: mib(total), guestRAM: mib(guest), overhead: mib(total - guest),
                          tcgCodeBuffer: mib(code), otherAnonymous: mib(anon), bootImages: mib(boot), bootImagesPss: mib(bootPss),
                          qemuAndLibraries: mib(file), qemuAndLibrariesPss: mib(filePss), guestRAMFileAllocated: allocated)
    }
}
