import Foundation
import StasisCore

/// A durable workflow: an async function of a context and a Codable input, re-run from the top on resume.
public typealias Workflow<Input: Codable & Sendable, Output: Codable & Sendable> = @Sendable (WorkflowContext, Input) async throws -> Output

/// Runs registered workflows over a SQLite journal, and resumes the ones a crash left unfinished.
public actor WorkflowEngine {
    /// What `resumeUnfinished()` did.
    public struct ResumeReport: Sendable {
        /// Workflow ids that ran to completion (or continued as new until they completed).
        public var completed: [String] = []
        /// Workflow ids that did not complete, with the error's message.
        public var failed: [String: String] = [:]
    }

    private typealias Erased = @Sendable (WorkflowContext, String) async throws -> String

    private let journal: Journal
    private let limits: HistoryLimits
    private let onWarning: @Sendable (HistoryWarning) -> Void
    private var workflows: [String: Erased] = [:]
    private var active: Set<String> = []

    /// Opens (creating if needed) the journal at `databaseURL`; `onWarning` hears of histories nearing their limits.
    public init(
        databaseURL: URL, limits: HistoryLimits = .default,
        onWarning: @escaping @Sendable (HistoryWarning) -> Void = WorkflowEngine.logWarning
    ) throws {
        journal = try Journal(url: databaseURL)
        self.limits = limits
        self.onWarning = onWarning
    }

    /// Opens the journal at `$STASIS_HOME/replay.sqlite`.
    public init(home: StasisHome, limits: HistoryLimits = .default) throws {
        try self.init(databaseURL: home.root.appendingPathComponent("replay.sqlite"), limits: limits)
    }

    /// The default warning handler: one line on standard error.
    public static func logWarning(_ warning: HistoryWarning) {
        FileHandle.standardError.write(Data("stasis replay: warning: \(warning)\n".utf8))
    }

    /// Registers `workflow` under `name`; a journaled run of that name is executed by this function.
    public func register<Input: Codable & Sendable, Output: Codable & Sendable>(
        _ name: String, _ workflow: @escaping Workflow<Input, Output>
    ) {
        workflows[name] = { ctx, inputText in
            let input: Input
            do { input = try JSONCoding.decode(Input.self, inputText) } catch {
                throw StasisError(.corrupted, "workflow \"\(ctx.workflowID)\": the journaled input is not a \(Input.self)", cause: error)
            }
            let output = try await workflow(ctx, input)
            do { return try JSONCoding.encode(output) } catch {
                throw StasisError(.invalidArgument, "workflow \"\(ctx.workflowID)\": cannot encode its output as JSON", cause: error)
            }
        }
    }

    /// Starts workflow `id` (or resumes it if it exists) and returns its output once it completes.
    public func run<Input: Codable & Sendable, Output: Codable & Sendable>(
        _ name: String, id: String, input: Input, as _: Output.Type = Output.self
    ) async throws -> Output {
        if let existing = try journal.latestRun(id) {
            guard existing.name == name else {
                throw StasisError(.alreadyExists, "workflow id \"\(id)\" already belongs to a workflow named \"\(existing.name)\", not \"\(name)\"")
            }
        } else {
            guard workflows[name] != nil else { throw StasisError(.notFound, "no workflow is registered as \"\(name)\"") }
            let text: String
            do { text = try JSONCoding.encode(input) } catch {
                throw StasisError(.invalidArgument, "cannot encode the input of workflow \"\(id)\" as JSON", cause: error)
            }
            try journal.create(id: id, name: name, input: text)
        }
        return try output(of: try await drive(id), as: Output.self)
    }

    /// Re-runs the unfinished run of workflow `id` to completion and returns its output.
    public func resume<Output: Codable & Sendable>(_ id: String, as _: Output.Type = Output.self) async throws -> Output {
        guard try journal.latestRun(id) != nil else { throw StasisError(.notFound, "no workflow \"\(id)\" in \(journal.url.path)") }
        return try output(of: try await drive(id), as: Output.self)
    }

    /// Finds every workflow left running (by a crash, a kill -9, a cancelled task) and re-runs each to completion.
    public func resumeUnfinished() async throws -> ResumeReport {
        var report = ResumeReport()
        for record in try journal.unfinished() where !active.contains(record.id) {
            do {
                let final = try await drive(record.id)
                if final.status == .completed {
                    report.completed.append(record.id)
                } else {
                    report.failed[record.id] = final.result ?? final.status.rawValue
                }
            } catch {
                report.failed[record.id] = String(describing: error)
            }
        }
        return report
    }

    /// The latest run of workflow `id`, or nil if there is none.
    public func status(of id: String) throws -> WorkflowRecord? {
        try journal.latestRun(id)
    }

    /// Every run of workflow `id`, oldest first (more than one after `continueAsNew`).
    public func runs(of id: String) throws -> [WorkflowRecord] {
        try journal.runs(id)
    }

    /// The journaled events of one run of workflow `id` (default: the latest run).
    public func history(of id: String, run: Int? = nil) throws -> [JournalEvent] {
        guard let number = try run ?? journal.latestRun(id)?.run else { return [] }
        return try journal.events(id, run: number)
    }

    /// A SQLite pragma of the journal's connection (`journal_mode`, `synchronous`), for checks.
    public func pragma(_ name: String) throws -> String? {
        try journal.pragma(name)
    }

    private func output<Output: Decodable>(of record: WorkflowRecord, as _: Output.Type) throws -> Output {
        switch record.status {
        case .completed:
            do { return try JSONCoding.decode(Output.self, record.result ?? "null") } catch {
                throw StasisError(.invalidArgument, "the output of workflow \"\(record.id)\" is not a \(Output.self)", cause: error)
            }
        case .failed:
            throw StasisError(.invalidState, "workflow \"\(record.id)\" run \(record.run) failed: \(record.result ?? "no message")")
        case .running, .continuedAsNew:
            throw StasisError(.internalError, "workflow \"\(record.id)\" run \(record.run) did not finish (\(record.status.rawValue))")
        }
    }

    /// Executes the latest run of `id` until the workflow completes or fails, following `continueAsNew`.
    private func drive(_ id: String) async throws -> WorkflowRecord {
        guard !active.contains(id) else {
            throw StasisError(.invalidState, "workflow \"\(id)\" is already being executed by this engine")
        }
        active.insert(id)
        defer { active.remove(id) }
        while true {
            guard let record = try journal.latestRun(id) else { throw StasisError(.notFound, "no workflow \"\(id)\"") }
            guard record.status == .running else { return record }
            guard let workflow = workflows[record.name] else {
                throw StasisError(.notFound, "workflow \"\(id)\" needs a workflow registered as \"\(record.name)\"; none is")
            }
            let context = WorkflowContext(
                workflowID: id, run: record.run, history: try journal.events(id, run: record.run), journal: journal,
                limits: limits, onWarning: onWarning)
            do {
                let output = try await workflow(context, record.input)
                if let fatal = await context.fatal { throw fatal.error }
                try await context.checkConsumed()
                try journal.finish(id: id, run: record.run, status: .completed, result: output)
            } catch let request as ContinueAsNewRequest {
                if let fatal = await context.fatal { try fail(record, fatal.error, nondeterminism: fatal.nondeterminism) }
                try journal.continueAsNew(id: id, run: record.run, seq: request.seq, name: record.name, input: request.input)
            } catch is CancellationError {
                throw CancellationError()  // interrupted, not failed: the run stays running for resumeUnfinished
            } catch {
                if let fatal = await context.fatal { try fail(record, fatal.error, nondeterminism: fatal.nondeterminism) }
                try fail(record, error, nondeterminism: false)
            }
        }
    }

    /// Records a failure (except non-determinism, which leaves the run running for fixed code) and throws it.
    private func fail(_ record: WorkflowRecord, _ error: any Error, nondeterminism: Bool) throws -> Never {
        if !nondeterminism {
            try journal.finish(id: record.id, run: record.run, status: .failed, result: String(describing: error))
        }
        throw error
    }
}
