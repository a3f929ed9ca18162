import Foundation
import Model

/// A job config that cannot be used, with every problem found (not just the first), each naming its
/// dotted key (`optim.lr`) and saying what was expected. Every config problem is one of these: reading
/// the file, the YAML, an override, a key, a value, and a value that does not fit the backbones.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        case unreadableFile, badYAML, unknownKey, wrongType, missingKey, invalidValue, badOverride
    }

    /// One problem: the key it concerns (dotted path, or "" for the whole file) and what is wrong.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var code: Code
        public var key: String
        public var message: String
        public init(_ code: Code, key: String, _ message: String) {
            self.code = code
            self.key = key
            self.message = message
        }
        public var description: String { key.isEmpty ? message : "\(key): \(message)" }
    }

    /// Where the config came from (a file path, or "--set", or "JSON").
    public var source: String
    public var problems: [Problem]
    /// The error underneath (the file system's, the YAML parser's), if any.
    public var cause: (any Error)?

    public init(source: String, problems: [Problem], cause: (any Error)? = nil) {
        self.source = source
        self.problems = problems
        self.cause = cause
    }

    public init(source: String, _ code: Code, key: String = "", _ message: String, cause: (any Error)? = nil) {
        self.init(source: source, problems: [Problem(code, key: key, message)], cause: cause)
    }

    /// Same source and problems (the cause is not compared).
    public static func == (a: ConfigError, b: ConfigError) -> Bool { a.source == b.source && a.problems == b.problems }

    /// The first problem's code (most callers only need to know the kind).
    public var code: Code { problems.first?.code ?? .invalidValue }

    public var description: String {
        let lines = problems.map { "  - \($0)" }.joined(separator: "\n")
        let because = cause.map { "\n  (\(ErrorCause.describe($0)))" } ?? ""
        return "invalid job config \(source):\n\(lines)\(because)\nFix the listed keys (every key is documented in the README) and retry."
    }

}
