/// Thrown by `continueAsNew` to end the run; the engine catches it.
struct ContinueAsNewRequest: Error {
    let seq: Int
    let input: String
}
