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
        return text + (cause.map { " (\(ErrorCause.describe($0)))" } ?? "")
    }
}

/// How an error kept as a cause is shown: the system's own words where Foundation hides them (on Linux
/// its file errors say "The operation could not be completed" with the POSIX error underneath).
public enum ErrorCause {
    public static func describe(_ error: any Error) -> String {
        if let posix = error as? POSIXError { return String(cString: strerror(posix.code.rawValue)) }
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? Error { return describe(underlying) }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        if ns.domain == NSCocoaErrorDomain, let path = ns.userInfo[NSFilePathErrorKey] as? String {
            return "\(ns.localizedDescription) (\(path))"
        }
        let text = "\(error)"
        return text.contains("Error Domain=") ? ns.localizedDescription : text
    }
}
