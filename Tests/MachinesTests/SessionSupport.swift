import Agents
import Context
import Foundation
import Logging
import Models
import StasisCore
import Testing

/// Sessions in the VM fixture's home, driven in-process.
struct SessionHarness {
    let manager: SessionManager
    let log: ContextLog

    /// The one manager of the fixture's home: a second would find the sessions locked.
    static func make() async throws -> SessionHarness {
        try await Shared.instance.harness()
    }

    private actor Shared {
        static let instance = Shared()
        private var made: Task<SessionHarness, any Error>?

        func harness() async throws -> SessionHarness {
            if made == nil { made = Task { try await SessionHarness.build() } }
            guard let made else { throw StasisError(.internalError, "no harness") }
            return try await made.value
        }
    }

    private static func build() async throws -> SessionHarness {
        let env = try await VMFixture.shared.env()
        let log = try ContextLog(url: env.home.contextLog)
        let environment = SessionEnvironment(
            home: env.home, log: log, makeModel: { try $0.makeProvider(httpClient: .shared) }, logger: Logger(label: "test"))
        let manager = SessionManager(environment: environment)
        try await manager.start()
        return SessionHarness(manager: manager, log: log)
    }

    /// A session of the busybox image with a short idle timeout.
    func newSession(idle: Double = 600) async throws -> Session {
        let info = try await manager.create(SessionConfiguration(image: "bb", memoryMiB: 256, idleTimeoutSeconds: idle))
        return try await manager.session(info.id)
    }
}

/// The system events of `records`, by name.
func systemEvents(_ records: [ContextRecord]) -> [SystemEventBody] {
    records.filter { $0.kind == .system }.compactMap { try? $0.decodeBody(SystemEventBody.self) }
}

/// The tool results of `records`.
func toolResults(_ records: [ContextRecord]) -> [ToolResultBody] {
    records.filter { $0.kind == .toolResult }.compactMap { try? $0.decodeBody(ToolResultBody.self) }
}

/// Waits (by tailing the log, no polling) for the first record after `after` that matches.
func awaitRecord(_ log: ContextLog, _ session: String, after: Int64 = 0, timeout: Duration = .seconds(120),
                 _ matches: @escaping @Sendable (ContextRecord) -> Bool) async throws -> ContextRecord {
    try await withThrowingTaskGroup(of: ContextRecord?.self) { group in
        group.addTask {
            for try await record in log.tail(session: session, after: after) where matches(record) { return record }
            return nil
        }
        group.addTask {
            try await Task.sleep(for: timeout)  // a deadline, not synchronization
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let record = first else {
            throw StasisError(.timeout, "no matching record in session \(session) within \(timeout)")
        }
        return record
    }
}

/// Whether `record` is the system event `name`.
func isEvent(_ name: String) -> @Sendable (ContextRecord) -> Bool {
    { record in record.kind == .system && (try? record.decodeBody(SystemEventBody.self))?.event == name }
}
