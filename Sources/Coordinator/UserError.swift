import Model

/// An error a command reports as one clear message and a non-zero exit (no stack trace for user input):
/// what went wrong and what to do, with the error underneath kept as its cause.
struct UserError: Error, CustomStringConvertible {
    var message: String
    var cause: (any Error)?

    init(_ message: String, cause: (any Error)? = nil) {
        self.message = message
        self.cause = cause
    }

    var description: String { cause.map { "\(message) (\(ErrorCause.describe($0)))" } ?? message }
}
