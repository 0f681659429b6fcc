import Context
import Foundation

/// The timed append loops of the context benchmark, the same for every `AppendTarget`.
enum AppendWorkload {
    /// One writer appending one record at a time, each awaited until durable.
    static func sequential(_ target: any AppendTarget, _ records: [NewRecord]) async throws -> AppendRun {
        let clock = ContinuousClock()
        var latencies: [Double] = []
        latencies.reserveCapacity(records.count)
        let start = clock.now
        for record in records {
            let t0 = clock.now
            try await target.appendOne(record)
            latencies.append((clock.now - t0).milliseconds)
        }
        return AppendRun(appends: records.count, seconds: (clock.now - start).milliseconds / 1000, latencies: latencies)
    }

    /// One writer per session, all at once, each appending its records one at a time.
    static func concurrent(_ target: any AppendTarget, _ sessions: [[NewRecord]]) async throws -> AppendRun {
        let clock = ContinuousClock()
        let start = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for records in sessions {
                group.addTask {
                    var own: [Double] = []
                    own.reserveCapacity(records.count)
                    for record in records {
                        let t0 = clock.now
                        try await target.appendOne(record)
                        own.append((clock.now - t0).milliseconds)
                    }
                    return own
                }
            }
            var all: [Double] = []
            for try await own in group { all += own }
            return all
        }
        return AppendRun(appends: latencies.count, seconds: (clock.now - start).milliseconds / 1000, latencies: latencies)
    }

    /// One writer appending `size` records per transaction; latencies are per batch.
    static func batched(_ target: any AppendTarget, _ records: [NewRecord], size: Int) throws -> AppendRun {
        let clock = ContinuousClock()
        var latencies: [Double] = []
        let start = clock.now
        for offset in stride(from: 0, to: records.count, by: size) {
            let batch = Array(records[offset ..< min(offset + size, records.count)])
            let t0 = clock.now
            try target.appendBatch(batch)
            latencies.append((clock.now - t0).milliseconds)
        }
        return AppendRun(appends: records.count, seconds: (clock.now - start).milliseconds / 1000, latencies: latencies)
    }

    /// The hardware floor: `count` writes of one 4 KiB page, each followed by `fdatasync`, into a
    /// preallocated 4 MiB file, in place and in turn, as a WAL commit writes a page frame into a WAL
    /// that checkpoints keep reusing (1000 pages by default). Allocating writes would cost a
    /// journal commit of the file system each; a reused WAL does not pay that.
    static func fsyncFloor(at url: URL, count: Int) throws -> AppendRun {
        let page = 4096, pages = 1000
        let fd = open(url.path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: page)
        for i in 0 ..< pages {
            guard buffer.withUnsafeBytes({ pwrite(fd, $0.baseAddress, page, off_t(i * page)) }) == page else {
                throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
            }
        }
        guard fsync(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        buffer = [UInt8](repeating: 0x61, count: page)
        let clock = ContinuousClock()
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        let start = clock.now
        for i in 0 ..< count {
            let t0 = clock.now
            let written = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress, page, off_t((i % pages) * page)) }
            guard written == page, fdatasync(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            latencies.append((clock.now - t0).milliseconds)
        }
        return AppendRun(appends: count, seconds: (clock.now - start).milliseconds / 1000, latencies: latencies)
    }
}
