import Crypto
import Foundation
import Hummingbird

/// Refuses every request without `Authorization: Bearer <token>`. The comparison takes the same
/// time whatever the token sent, so timing tells nothing about the real one.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else {
            throw APIError(.unauthorized, code: "unauthorized", "this call needs an Authorization: Bearer <token> header; the token is in the server's token file")
        }
        guard Self.same(String(header.dropFirst("Bearer ".count)), token) else {
            throw APIError(.unauthorized, code: "unauthorized", "the bearer token is wrong")
        }
        return try await next(request, context)
    }

    private static func same(_ a: String, _ b: String) -> Bool {
        // Compare digests: equal length, and no early exit on the first differing byte.
        let x = Array(SHA256.hash(data: Data(a.utf8)))
        let y = Array(SHA256.hash(data: Data(b.utf8)))
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
