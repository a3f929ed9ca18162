import Foundation

/// An error from loading or running a model: what was expected, what was found, and what to do.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case fileNotFound, badHeader, badConfig, missingTensor, unexpectedTensor, badShape, badDType,
             badInput, unsupported, io
    }
    public var code: Code
    public var message: String
    public var path: String?
    /// The error underneath (the file system's, the JSON parser's), if any.
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, path: String? = nil, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.cause = cause
    }

    public var description: String {
        let text = path.map { "\($0): \(message)" } ?? message
        return text + (cause.map { " (\(($0 as NSError).localizedDescription))" } ?? "")
    }
}
