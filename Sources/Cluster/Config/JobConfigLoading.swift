import Foundation
import Yams

/// One `--set dotted.key=value` override. The value is parsed as a YAML scalar or flow collection,
/// so `optim.lr=3e-4`, `model.vision_layers=[0,2]` and `cluster.launcher=inprocess` all work.
public struct ConfigOverride: Sendable, Equatable {
    public var path: [String]
    public var value: String

    /// Parses `dotted.key=value`.
    public init(parsing text: String) throws {
        guard let eq = text.firstIndex(of: "=") else {
            throw ConfigError(source: "--set", .badOverride, "`\(text)` is not of the form dotted.key=value (e.g. optim.lr=3e-4)")
        }
        let key = String(text[..<eq]).trimmingCharacters(in: .whitespaces)
        let parts = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !key.isEmpty, parts.allSatisfy({ !$0.isEmpty }) else {
            throw ConfigError(source: "--set", .badOverride, "`\(text)`: the key must be dotted like optim.lr")
        }
        self.path = parts
        self.value = String(text[text.index(after: eq)...])
    }

    public var key: String { path.joined(separator: ".") }
}

extension JobConfig {
    /// Loads a job config from a YAML file, applies `--set` overrides, resolves relative paths
    /// against the file's directory (override paths against the current directory), and validates.
    ///
    /// - Throws: ``ConfigError`` listing every unknown key, wrong type, missing path and invalid value.
    public static func load(file: String, overrides: [ConfigOverride] = []) throws -> JobConfig {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw ConfigError(source: file, .unreadableFile, "cannot read the file; check the --config path", cause: error)
        }
        let dir = URL(fileURLWithPath: file).deletingLastPathComponent().path
        return try parse(yaml: text, source: file, baseDirectory: dir, overrides: overrides)
    }

    /// Parses YAML (or JSON) text; relative paths in it resolve against `baseDirectory`.
    public static func parse(yaml text: String, source: String = "<yaml>", baseDirectory: String,
                             overrides: [ConfigOverride] = []) throws -> JobConfig {
        var root: Node
        do {
            root = try Yams.compose(yaml: text) ?? Node.mapping(.init([]))
        } catch {
            throw ConfigError(source: source, .badYAML, "not valid YAML: \(error)", cause: error)
        }
        var overridden: Set<String> = []
        for o in overrides {
            let valueNode: Node
            do {
                valueNode = try Yams.compose(yaml: o.value) ?? Node.scalar(.init(""))
            } catch {
                throw ConfigError(source: "--set", .badOverride, key: o.key,
                                  "value `\(o.value)` is not a YAML scalar or flow list", cause: error)
            }
            do {
                root = try setting(valueNode, at: o.path[...], in: root)
            } catch let e as ConfigError {
                throw ConfigError(source: "--set", problems: e.problems.map { .init($0.code, key: o.key, $0.message) })
            }
            overridden.insert(o.key)
        }
        let resolver = PathResolver(baseDirectory: baseDirectory, currentDirectory: FileManager.default.currentDirectoryPath,
                                    overridden: overridden)
        let decoding = ConfigDecoding(userInfo: [PathResolver.key: resolver])
        let config = try decoding.decode(JobConfig.self, from: merging(root, over: defaultsTree))
        var problems = decoding.problems + decoding.unknownKeys(in: root)
        if problems.isEmpty { problems = config.problems() }
        guard problems.isEmpty else { throw ConfigError(source: source, problems: problems) }
        return config
    }

    /// Every default as a node tree (paths unresolved, nil options absent).
    private static let defaultsTree: Node = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // JSON is YAML; encoding plain structs of strings, numbers and bools cannot fail.
        let json = String(decoding: try! encoder.encode(JobConfig()), as: UTF8.self)
        return try! Yams.compose(yaml: json)!
    }()

    /// `user` laid over `defaults`: mappings merge key by key, anything else in `user` wins, and a null in
    /// `user` keeps the default (an empty `security:` section, say). Only optional keys (absent from the
    /// defaults) can be set to null.
    static func merging(_ user: Node, over defaults: Node) -> Node {
        guard case .mapping(let d) = defaults else { return user }
        if ConfigDecoding.isNull(user) { return defaults }
        guard case .mapping(let u) = user else { return user }
        var pairs: [(Node, Node)] = []
        func name(_ n: Node) -> String? { n.scalar?.string }
        for (k, v) in d {
            if let mine = Array(u).last(where: { name($0.key) == name(k) })?.value {
                pairs.append((k, ConfigDecoding.isNull(mine) ? v : merging(mine, over: v)))
            } else {
                pairs.append((k, v))
            }
        }
        for (k, v) in u where !d.contains(where: { name($0.key) == name(k) }) { pairs.append((k, v)) }
        return .mapping(.init(pairs))
    }

    /// Replaces (or creates) the value at `path` inside a YAML mapping tree.
    static func setting(_ value: Node, at path: ArraySlice<String>, in node: Node) throws -> Node {
        guard let head = path.first else { return value }
        var pairs: [(Node, Node)] = []
        if case .mapping(let m) = node {
            pairs = m.map { ($0.key, $0.value) }
        } else if !ConfigDecoding.isNull(node) {
            throw ConfigError(source: "--set", .badOverride, "cannot set a key inside a value that is not a mapping")
        }
        if let i = pairs.lastIndex(where: { $0.0.scalar?.string == head }) {
            pairs[i].1 = try setting(value, at: path.dropFirst(), in: pairs[i].1)
        } else {
            pairs.append((Node.scalar(.init(head)), try setting(value, at: path.dropFirst(), in: Node.scalar(.init("")))))
        }
        return .mapping(.init(pairs))
    }
}
