import Dispatch
import Foundation
import Synchronization

/// Runs one body on several threads and waits for all of them. Plain threads rather than
/// `concurrentPerform` or a task group: the work blocks in fsync and pread, and both of those cap
/// their width at the number of cores, which leaves the disk idle while a core waits on it.
final class ParallelWork: Sendable {
    private let failure = Mutex<(any Error)?>(nil)
    private let stopped = Atomic<Bool>(false)
    private let next = Atomic<Int>(0)

    /// The number of workers to use when the caller does not say: I/O-bound work (fsync of small
    /// files) needs more threads than cores to keep the file system's journal batching commits.
    static func defaultWorkers() -> Int { max(ProcessInfo.processInfo.activeProcessorCount * 2, 8) }

    /// Whether a worker has failed; the others stop taking work.
    var isStopped: Bool { stopped.load(ordering: .relaxed) }

    /// The next item index for any worker to take, or nil when `count` items are taken or a
    /// worker failed.
    func take(below count: Int) -> Int? {
        guard !isStopped else { return nil }
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return index < count ? index : nil
    }

    /// Runs `body(worker)` for worker 0..<workers, worker 0 on the calling thread, and rethrows the
    /// first error any of them threw.
    static func run(workers: Int, _ body: @escaping @Sendable (_ worker: Int, _ work: ParallelWork) throws -> Void) throws {
        let work = ParallelWork()
        let group = DispatchGroup()
        for worker in 1 ..< max(workers, 1) {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                work.attempt { try body(worker, work) }
            }
            thread.start()
        }
        work.attempt { try body(0, work) }
        group.wait()
        if let error = work.failure.withLock({ $0 }) { throw error }
    }

    private func attempt(_ body: () throws -> Void) {
        do { try body() } catch {
            stopped.store(true, ordering: .relaxed)
            failure.withLock { if $0 == nil { $0 = error } }
        }
    }
}
