import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import StasisCore

/// One streaming POST to a model API: sends a JSON body, checks the status, and feeds the
/// `text/event-stream` answer through a `ReplyStreamDecoder`. Shared by the HTTP providers so that
/// they map errors, cancellation and secrets the same way.
struct EventStreamRequest: Sendable {
    /// The provider's name in messages, e.g. "OpenAI".
    var providerName: String
    var url: String
    /// Headers other than content type and accept; may hold the key, so never logged.
    var headers: [(String, String)]
    var body: JSONValue
    /// The key, to scrub from anything the server says.
    var apiKey: APIKey?
    /// How long to wait for the answer's status line; the body's pace is the client's read timeout.
    var timeout: TimeAmount

    /// Starts the request in a task that the returned stream's end cancels.
    func stream<StreamDecoder: ReplyStreamDecoder & Sendable>(
        decoder: StreamDecoder, httpClient: HTTPClient, logger: Logger
    ) -> AsyncThrowingStream<ModelEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: ModelEvent.self)
        let task = Task {
            do {
                var decoder = decoder
                try await run(decoder: &decoder, httpClient: httpClient, logger: logger) { piece in
                    continuation.yield(.text(piece))
                }
                continuation.yield(.reply(try decoder.reply()))
                continuation.finish()
            } catch let error as StasisError {
                // A stream's error event is server text too, and may quote the key.
                let message = apiKey.map { $0.redact(error.message) } ?? error.message
                continuation.finish(throwing: StasisError(error.code, message, cause: error.cause))
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func run<StreamDecoder: ReplyStreamDecoder>(
        decoder: inout StreamDecoder, httpClient: HTTPClient, logger: Logger, onText: (String) -> Void
    ) async throws {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.headers.add(name: "accept", value: "text/event-stream")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let bodyBytes: Data
        do {
            bodyBytes = try body.encoded()
        } catch {
            throw StasisError(.internalError, "cannot encode the \(providerName) request body", cause: error)
        }
        request.body = .bytes(ByteBuffer(data: bodyBytes))

        logger.debug("model request", metadata: ["url": "\(url)", "bytes": "\(bodyBytes.count)"])
        let response: HTTPClientResponse
        do {
            response = try await httpClient.execute(request, timeout: timeout, logger: logger)
        } catch {
            throw mapTransportError(error, while: "sending the request to")
        }
        guard (200..<300).contains(response.status.code) else {
            throw await statusError(response)
        }

        var parser = SSEParser()
        do {
            reading: for try await chunk in response.body {
                for event in parser.feed(chunk.readableBytesView) {
                    for piece in try decoder.consume(event) { onText(piece) }
                    if decoder.isFinished { break reading }
                }
            }
            if !decoder.isFinished {
                for event in parser.finish() {
                    for piece in try decoder.consume(event) { onText(piece) }
                }
            }
        } catch let error as StasisError {
            throw error
        } catch {
            throw mapTransportError(error, while: "reading the answer from")
        }
        logger.debug("model reply streamed", metadata: ["url": "\(url)"])
    }

    /// The error for a non-2xx answer: the status and the provider's own message, key scrubbed.
    private func statusError(_ response: HTTPClientResponse) async -> StasisError {
        let status = "\(response.status.code) \(response.status.reasonPhrase)"
        let bytes = try? await response.body.collect(upTo: 64 * 1024)
        let text = bytes.map { String(buffer: $0) } ?? ""
        var detail = Self.errorMessage(fromBody: text)
        if let apiKey { detail = apiKey.redact(detail) }
        let suffix = detail.isEmpty ? "" : ": \(detail)"
        return StasisError(.protocolError, "\(providerName) answered POST \(url) with \(status)\(suffix)")
    }

    private func mapTransportError(_ error: any Error, while action: String) -> any Error {
        if error is CancellationError { return error }
        if let error = error as? HTTPClientError {
            switch error {
            case .cancelled:
                return CancellationError()
            case .deadlineExceeded, .readTimeout, .writeTimeout, .connectTimeout:
                return StasisError(.timeout, "timed out \(action) \(providerName) at \(url)", cause: error)
            default:
                break
            }
        }
        return StasisError(.ioFailure, "failed \(action) \(providerName) at \(url)", cause: error)
    }

    /// The human part of an error body: `error.message` (OpenAI, Anthropic), a bare `error` string
    /// (Ollama) or a top-level `message` (vLLM); else the body itself, shortened.
    static func errorMessage(fromBody body: String) -> String {
        if let json = try? JSONValue.parse(body) {
            if let message = json["error"]?["message"]?.stringValue {
                if let type = json["error"]?["type"]?.stringValue { return "\(message) (\(type))" }
                return message
            }
            if let message = json["error"]?.stringValue { return message }
            if let message = json["message"]?.stringValue { return message }
        }
        let trimmed = body.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.count > 500 ? String(trimmed.prefix(500)) + "…" : trimmed
    }
}
