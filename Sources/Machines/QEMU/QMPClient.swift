import Foundation
import NIOCore
import NIOPosix
import StasisCore

/// A QEMU Machine Protocol connection: one JSON object per line, commands answered in order,
/// events interleaved. QEMU serves one QMP client per socket at a time, so keep it short-lived.
public actor QMPClient {
    /// A QMP reply or event, as JSON.
    typealias Object = [String: any Sendable]

    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var waiting: [CheckedContinuation<Object, any Error>] = []
    private var greeting: CheckedContinuation<Object, any Error>?
    private var greeted: Object?
    private var closed: StasisError?
    /// Names of the events received so far.
    public private(set) var events: [String] = []

    private init(outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        self.outbound = outbound
    }

    /// Connects, negotiates capabilities, runs `body`, closes.
    public static func connect<R: Sendable>(socketPath: String, _ body: @Sendable (QMPClient) async throws -> R) async throws -> R {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do { channel = try await UnixSocket.connect(socketPath) } catch {
            throw StasisError(.invalidState, "cannot reach QEMU's QMP socket \(socketPath)", cause: error)
        }
        return try await channel.executeThenClose { inbound, outbound in
            let client = QMPClient(outbound: outbound)
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await client.readLoop(inbound) }
                defer {
                    group.cancelAll()
                    outbound.finish()
                }
                try await client.greet()
                return try await body(client)
            }
        }
    }

    private func readLoop(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) async {
        var pending = Data()
        do {
            for try await buffer in inbound {
                pending.append(contentsOf: buffer.readableBytesView)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = pending[pending.startIndex ..< newline]
                    pending = Data(pending[pending.index(after: newline)...])
                    if let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] {
                        receive(object.mapValues { Self.sendable($0) })
                    }
                }
            }
            fail(StasisError(.invalidState, "QEMU closed the QMP connection"))
        } catch {
            fail(StasisError(.invalidState, "QMP connection failed", cause: error))
        }
    }

    private func receive(_ object: Object) {
        if object["QMP"] != nil {
            greeted = object
            greeting?.resume(returning: object)
            greeting = nil
        } else if let event = object["event"] as? String {
            events.append(event)
        } else if !waiting.isEmpty {
            waiting.removeFirst().resume(returning: object)
        }
    }

    private func fail(_ error: StasisError) {
        closed = error
        greeting?.resume(throwing: error)
        greeting = nil
        for w in waiting { w.resume(throwing: error) }
        waiting = []
    }

    private static func sendable(_ value: Any) -> any Sendable {
        switch value {
        case let v as String: return v
        case let v as NSNumber: return v.doubleValue
        case let v as [String: Any]: return v.mapValues { sendable($0) }
        case let v as [Any]: return v.map { sendable($0) }
        default: return String(describing: value)
        }
    }

    private func greet() async throws {
        if greeted == nil {
            _ = try await withCheckedThrowingContinuation { (c: CheckedContinuation<Object, any Error>) in
                if let closed { c.resume(throwing: closed) } else { greeting = c }
            }
        }
        try await execute("qmp_capabilities")
    }

    /// Runs a command and returns its `return` value.
    @discardableResult
    public func execute(_ command: String, _ arguments: [String: any Sendable] = [:]) async throws -> (any Sendable)? {
        if let closed { throw closed }
        var message: [String: Any] = ["execute": command]
        if !arguments.isEmpty { message["arguments"] = arguments }
        var data = try JSONSerialization.data(withJSONObject: message)
        data.append(UInt8(ascii: "\n"))
        let reply = try await withCheckedThrowingContinuation { (c: CheckedContinuation<Object, any Error>) in
            waiting.append(c)
            let buffer = ByteBuffer(bytes: data)
            Task { do { try await self.outbound.write(buffer) } catch { self.fail(StasisError(.invalidState, "cannot write to QMP", cause: error)) } }
        }
        if let error = reply["error"] as? [String: any Sendable] {
            throw StasisError(.toolFailed, "QEMU refused \(command): \(error["desc"] as? String ?? "\(error)")")
        }
        return reply["return"]
    }
}
