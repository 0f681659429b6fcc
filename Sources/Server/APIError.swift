import Foundation
import HTTPTypes
import Hummingbird
import StasisCore

/// Every error the API answers with: a JSON body `{"error": {"code", "message"}}` and a status
/// that follows from the code.
struct APIError: HTTPResponseError {
    let status: HTTPResponse.Status
    let code: String
    let message: String

    init(_ status: HTTPResponse.Status, code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    /// The API's view of any error a handler threw.
    init(_ error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as StasisError:
            let status: HTTPResponse.Status = switch error.code {
            case .invalidArgument: .badRequest
            case .notFound: .notFound
            case .alreadyExists, .invalidState: .conflict
            case .timeout: .gatewayTimeout
            case .unsupported: .notImplemented
            default: .internalServerError
            }
            self.init(status, code: error.code.rawValue, error.description)
        case let error as HTTPResponseError where error.status == .contentTooLarge:
            self.init(.contentTooLarge, code: "tooLarge", "the request body is larger than the server accepts")
        case let error as DecodingError:
            self.init(.badRequest, code: "invalidArgument", "the request body is not valid JSON for this call: \(Self.describe(error))")
        case let error as HTTPError:
            self.init(error.status, code: "http", error.body ?? error.status.reasonPhrase)
        default:
            self.init(.internalServerError, code: "internalError", "\(error)")
        }
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try JSONEncoder().encode(
            APIErrorBody(error: .init(code: code, message: message)), from: request, context: context)
        response.status = status
        return response
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): "missing field \"\(key.stringValue)\""
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            "wrong type at \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\""
        case .dataCorrupted(let context): context.debugDescription
        @unknown default: "\(error)"
        }
    }
}

/// The JSON body of every error answer.
struct APIErrorBody: Codable {
    struct Detail: Codable {
        let code: String
        let message: String
    }

    let error: Detail
}

/// Turns whatever a handler throws into an `APIError`, so every failure has a JSON body.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do { return try await next(request, context) } catch {
            throw APIError(error)
        }
    }
}
