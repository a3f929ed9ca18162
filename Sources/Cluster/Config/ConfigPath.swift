import Foundation

/// A filesystem path in a job config. Declaring a key with this type is what makes it a path: when a
/// config is read, a relative path resolves against the YAML file's own directory, or, when it came from
/// a `--set` override, against the current directory. It encodes as its string.
public struct ConfigPath: Codable, Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
    public var path: String

    public init(_ path: String) { self.path = path }
    public init(stringLiteral path: String) { self.path = path }

    public init(from decoder: Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        let resolver = decoder.userInfo[PathResolver.key] as? PathResolver
        path = resolver?.resolve(raw, key: decoder.codingPath.map(\.stringValue).joined(separator: ".")) ?? raw
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(path)
    }

    public var isEmpty: Bool { path.isEmpty }
    public var description: String { path }

    /// `path/component`.
    public func appending(_ component: String) -> String { (path as NSString).appendingPathComponent(component) }
}

/// How ``ConfigPath``s resolve while a config is decoded.
final class PathResolver: @unchecked Sendable {
    static let key = CodingUserInfoKey(rawValue: "dehvf.configPaths")!

    let baseDirectory: String
    let currentDirectory: String
    /// Dotted keys that came from `--set` (they resolve against the current directory).
    let overridden: Set<String>

    init(baseDirectory: String, currentDirectory: String, overridden: Set<String>) {
        self.baseDirectory = baseDirectory
        self.currentDirectory = currentDirectory
        self.overridden = overridden
    }

    /// An absolute, standardised path; "" (a required path not given) stays "".
    func resolve(_ raw: String, key: String) -> String {
        if raw.isEmpty { return raw }
        if raw.hasPrefix("/") { return URL(fileURLWithPath: raw).standardizedFileURL.path }
        let base = overridden.contains(key) ? currentDirectory : baseDirectory
        return URL(fileURLWithPath: base).appendingPathComponent(raw).standardizedFileURL.path
    }
}
