/// A fixture file that is not in the test bundle.
struct FixtureMissing: Error, CustomStringConvertible {
    var name: String
    var description: String { "no fixture Fixtures/\(name).json in the test bundle" }
}
