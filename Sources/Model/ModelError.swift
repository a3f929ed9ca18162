/// An error from loading or running a model: what was expected, what was found, and what to do.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        case fileNotFound, badHeader, badConfig, missingTensor, unexpectedTensor, badShape, badDType,
             badInput, unsupported, io
    }
    public var code: Code
    public var message: String
    public var path: String?

    public init(_ code: Code, _ message: String, path: String? = nil) {
        self.code = code
        self.message = message
        self.path = path
    }

    public var description: String {
        if let path { return "\(path): \(message)" }
        return message
    }
}
