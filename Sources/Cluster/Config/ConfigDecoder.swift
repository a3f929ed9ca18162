import Yams

/// A closed set of choices in a config (`model.fusion`, `cluster.launcher`): read from its raw string,
/// and a value outside the set is one problem that lists the choices.
public protocol ConfigEnum: RawRepresentable, CaseIterable, Decodable where RawValue == String {}

/// A `Decoder` over a Yams node tree for the synthesized `Decodable` of the config structs. It never
/// stops at the first problem: a wrong type, a missing key or a bad choice is recorded (with its dotted
/// key) and a placeholder is returned, so one run reports every problem. It also records which keys each
/// mapping was asked for, which is how unknown keys are found (``ConfigDecoding/unknownKeys(in:)``).
final class ConfigDecoding {
    var problems: [ConfigError.Problem] = []
    /// Dotted path of a mapping → the keys the decoded types asked for there.
    private(set) var asked: [String: Set<String>] = [:]
    let userInfo: [CodingUserInfoKey: Any]

    init(userInfo: [CodingUserInfoKey: Any]) { self.userInfo = userInfo }

    func decode<T: Decodable>(_ type: T.Type, from root: Node) throws -> T {
        try value(T.self, node: root, path: [])
    }

    func ask(_ key: String, at path: [CodingKey]) { asked[dotted(path), default: []].insert(key) }

    func problem(_ code: ConfigError.Code, _ path: [CodingKey], _ message: String) {
        problems.append(.init(code, key: dotted(path), message))
    }

    /// Every key of `node` (the user's own tree, without defaults) that no decoded type asked for, with
    /// the closest known key when one is a plausible typo.
    func unknownKeys(in node: Node, path: String = "") -> [ConfigError.Problem] {
        guard case .mapping(let mapping) = node else { return [] }
        let known = asked[path] ?? []
        var out: [ConfigError.Problem] = []
        for (k, v) in mapping {
            guard let name = k.scalar?.string else { continue }
            let key = path.isEmpty ? name : "\(path).\(name)"
            if known.contains(name) {
                out += unknownKeys(in: v, path: key)
                continue
            }
            var message = "unknown key"
            if let best = closest(to: name, among: Array(known)) {
                message += " (did you mean `\(path.isEmpty ? best : "\(path).\(best)")`?)"
            }
            if !known.isEmpty { message += "; known keys here: \(known.sorted().joined(separator: ", "))" }
            out.append(.init(.unknownKey, key: key, message))
        }
        return out
    }

    // MARK: values

    /// Decodes one value: scalars by the config's rules, enums by their choices, anything else through
    /// its own `init(from:)`.
    func value<T: Decodable>(_ type: T.Type, node: Node?, path: [CodingKey]) throws -> T {
        if let choices = T.self as? any ConfigEnum.Type {
            return choice(choices, node: node, path: path) as! T
        }
        guard let node, !Self.isNull(node) else {
            if let placeholder = Self.placeholder(T.self) {
                problem(.missingKey, path, "required, but not given")
                return placeholder
            }
            return try T(from: NodeDecoder(node: nil, path: path, state: self))
        }
        if T.self == String.self {
            if case .scalar(let s) = node { return s.string as! T }
            problem(.wrongType, path, "expected a string, found \(Self.describe(node))")
            return "" as! T
        }
        if T.self == Int.self {
            if let v = Self.int(node) { return v as! T }
            problem(.wrongType, path, "expected an integer, found \(Self.describe(node))")
            return 0 as! T
        }
        if T.self == Double.self {
            if let v = Self.double(node) { return v as! T }
            problem(.wrongType, path, "expected a finite number, found \(Self.describe(node))")
            return 0.0 as! T
        }
        if T.self == Bool.self {
            if case .scalar(let s) = node, Self.isPlain(s), let b = Bool.construct(from: s) { return b as! T }
            problem(.wrongType, path, "expected true or false, found \(Self.describe(node))")
            return false as! T
        }
        return try T(from: NodeDecoder(node: node, path: path, state: self))
    }

    private func choice<E: ConfigEnum>(_ type: E.Type, node: Node?, path: [CodingKey]) -> E {
        let all = E.allCases.map(\.rawValue).joined(separator: " | ")
        if case .scalar(let s)? = node, let e = E(rawValue: s.string) { return e }
        problem(.invalidValue, path, "must be one of \(all), found \(node.map(Self.describe) ?? "nothing")")
        return E.allCases.first!
    }

    /// A stand-in for a scalar whose problem was recorded (the config is rejected anyway).
    private static func placeholder<T>(_ type: T.Type) -> T? {
        if T.self == String.self { return ("" as! T) }
        if T.self == Int.self { return (0 as! T) }
        if T.self == Double.self { return (0.0 as! T) }
        if T.self == Bool.self { return (false as! T) }
        return nil
    }

    // MARK: scalars

    static func isPlain(_ s: Node.Scalar) -> Bool { s.style == .plain || s.style == .any }

    static func isNull(_ n: Node) -> Bool {
        guard case .scalar(let s) = n, isPlain(s) else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(s.string)
    }

    /// A plain (unquoted) integer; `1e3` or `2.0` written for an integer is accepted only if integral.
    static func int(_ n: Node) -> Int? {
        guard case .scalar(let s) = n, isPlain(s) else { return nil }
        if let v = Int(s.string) { return v }
        if let d = Double(s.string), d.rounded() == d, abs(d) < 9.0e15 { return Int(d) }
        return nil
    }

    static func double(_ n: Node) -> Double? {
        guard case .scalar(let s) = n, isPlain(s) else { return nil }
        guard let v = Double(s.string) ?? Double.construct(from: s), v.isFinite else { return nil }
        return v
    }

    static func describe(_ n: Node) -> String {
        switch n {
        case .scalar(let s): isPlain(s) ? "`\(s.string)`" : "string \"\(s.string)\""
        case .mapping: "a mapping"
        case .sequence: "a list"
        }
    }

    private func dotted(_ path: [CodingKey]) -> String {
        var out = ""
        for k in path {
            if let i = k.intValue { out += "[\(i)]" } else { out += out.isEmpty ? k.stringValue : ".\(k.stringValue)" }
        }
        return out
    }
}

/// The `Decoder` the config structs see; all state lives in ``ConfigDecoding``.
struct NodeDecoder: Decoder {
    let node: Node?
    let codingPath: [CodingKey]
    let state: ConfigDecoding
    var userInfo: [CodingUserInfoKey: Any] { state.userInfo }

    init(node: Node?, path: [CodingKey], state: ConfigDecoding) {
        self.node = node
        self.codingPath = path
        self.state = state
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        var entries: [String: Node] = [:]
        switch node {
        case .mapping(let m)?:
            for (k, v) in m {
                guard case .scalar(let ks) = k else {
                    state.problem(.wrongType, codingPath, "keys must be plain strings, found \(ConfigDecoding.describe(k))")
                    continue
                }
                entries[ks.string] = v   // a repeated key: the last one wins, as in YAML tools
            }
        case nil:
            break
        case let other?:
            if !ConfigDecoding.isNull(other) {
                state.problem(.wrongType, codingPath, "expected a mapping of keys, found \(ConfigDecoding.describe(other))")
            }
        }
        return KeyedDecodingContainer(Keyed<Key>(entries: entries, codingPath: codingPath, state: state))
    }

    func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        guard case .sequence(let s)? = node else {
            state.problem(.wrongType, codingPath, "expected a list like [1, 2], found \(node.map(ConfigDecoding.describe) ?? "nothing")")
            return Unkeyed(items: [], codingPath: codingPath, state: state)
        }
        return Unkeyed(items: Array(s), codingPath: codingPath, state: state)
    }

    func singleValueContainer() throws -> SingleValueDecodingContainer {
        Single(node: node, codingPath: codingPath, state: state)
    }

    struct Index: CodingKey {
        var intValue: Int?
        var stringValue: String { "\(intValue!)" }
        init(_ i: Int) { intValue = i }
        init?(stringValue: String) { nil }
        init?(intValue: Int) { self.intValue = intValue }
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let entries: [String: Node]
        let codingPath: [CodingKey]
        let state: ConfigDecoding

        var allKeys: [Key] { entries.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool {
            state.ask(key.stringValue, at: codingPath)
            return entries[key.stringValue] != nil
        }

        func decodeNil(forKey key: Key) throws -> Bool {
            state.ask(key.stringValue, at: codingPath)
            return entries[key.stringValue].map(ConfigDecoding.isNull) ?? true
        }

        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            state.ask(key.stringValue, at: codingPath)
            return try state.value(T.self, node: entries[key.stringValue], path: codingPath + [key])
        }

        func nestedContainer<N: CodingKey>(keyedBy type: N.Type, forKey key: Key) throws -> KeyedDecodingContainer<N> {
            state.ask(key.stringValue, at: codingPath)
            return try NodeDecoder(node: entries[key.stringValue], path: codingPath + [key], state: state).container(keyedBy: N.self)
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
            state.ask(key.stringValue, at: codingPath)
            return try NodeDecoder(node: entries[key.stringValue], path: codingPath + [key], state: state).unkeyedContainer()
        }

        func superDecoder() throws -> Decoder { NodeDecoder(node: nil, path: codingPath, state: state) }
        func superDecoder(forKey key: Key) throws -> Decoder {
            NodeDecoder(node: entries[key.stringValue], path: codingPath + [key], state: state)
        }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let items: [Node]
        let codingPath: [CodingKey]
        let state: ConfigDecoding
        var currentIndex = 0

        init(items: [Node], codingPath: [CodingKey], state: ConfigDecoding) {
            self.items = items
            self.codingPath = codingPath
            self.state = state
        }

        var count: Int? { items.count }
        var isAtEnd: Bool { currentIndex >= items.count }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, ConfigDecoding.isNull(items[currentIndex]) else { return false }
            currentIndex += 1
            return true
        }

        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            defer { currentIndex += 1 }
            let node = isAtEnd ? nil : items[currentIndex]
            return try state.value(T.self, node: node, path: codingPath + [Index(currentIndex)])
        }

        mutating func nestedContainer<N: CodingKey>(keyedBy type: N.Type) throws -> KeyedDecodingContainer<N> {
            defer { currentIndex += 1 }
            return try NodeDecoder(node: isAtEnd ? nil : items[currentIndex], path: codingPath + [Index(currentIndex)],
                                   state: state).container(keyedBy: N.self)
        }

        mutating func nestedUnkeyedContainer() throws -> UnkeyedDecodingContainer {
            defer { currentIndex += 1 }
            return try NodeDecoder(node: isAtEnd ? nil : items[currentIndex], path: codingPath + [Index(currentIndex)],
                                   state: state).unkeyedContainer()
        }

        mutating func superDecoder() throws -> Decoder {
            defer { currentIndex += 1 }
            return NodeDecoder(node: isAtEnd ? nil : items[currentIndex], path: codingPath + [Index(currentIndex)], state: state)
        }
    }

    struct Single: SingleValueDecodingContainer {
        let node: Node?
        let codingPath: [CodingKey]
        let state: ConfigDecoding

        func decodeNil() -> Bool { node.map(ConfigDecoding.isNull) ?? true }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try state.value(T.self, node: node, path: codingPath) }
    }
}

/// The known key closest to `word` by edit distance, if it is close enough to be a plausible typo.
func closest(to word: String, among known: [String]) -> String? {
    var best: (String, Int)?
    for k in known.sorted() {
        let d = editDistance(word, k)
        if d < (best?.1 ?? Int.max) { best = (k, d) }
    }
    guard let (k, d) = best, d <= max(2, k.count / 3) else { return nil }
    return k
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8), b = Array(b.utf8)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}
