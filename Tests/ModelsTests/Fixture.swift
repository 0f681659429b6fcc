import Foundation

/// A recorded API exchange: the request the client must send and the answer the server replays.
struct Fixture: Decodable, Sendable {
    /// What the request must look like; a request that does not match gets a 418 naming the mismatch.
    struct Expected: Decodable, Sendable {
        var method: String
        var path: String
        /// Strings the request body must contain.
        var mustContain: [String]
    }

    var request: Expected
    var status: Int
    var contentType: String
    /// The answer's body, exactly as the real API sends it.
    var body: String
    /// Leave the answer unfinished and the connection open, as a slow model would.
    var keepOpen: Bool?

    /// The fixture `Fixtures/<name>.json` of the test bundle.
    static func named(_ name: String) throws -> Fixture {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures") else {
            throw FixtureMissing(name: name)
        }
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }
}
