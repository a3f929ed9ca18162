import Yams

/// Reads typed values out of one YAML mapping, remembering which keys it consumed so the rest can be
/// reported as unknown. Problems are collected, not thrown, so one run reports every bad key.
struct ConfigReader {
    let path: String
    private var entries: [(key: String, value: Node)] = []
    private var consumed: Set<String> = []

    init(mapping node: Node?, path: String, problems: inout [ConfigError.Problem]) {
        self.path = path
        guard let node else { return }
        if case .scalar(let s) = node, s.string.isEmpty || s.string == "~" || s.string == "null" { return }
        guard case .mapping(let mapping) = node else {
            problems.append(.init(.wrongType, key: path, "expected a mapping of keys, found \(Self.describe(node))"))
            return
        }
        for (k, v) in mapping {
            guard case .scalar(let ks) = k else {
                problems.append(.init(.wrongType, key: path, "keys must be plain strings, found \(Self.describe(k))"))
                continue
            }
            entries.append((ks.string, v))
        }
    }

    func key(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }

    mutating func node(_ name: String) -> Node? {
        consumed.insert(name)
        guard let v = entries.last(where: { $0.key == name })?.value else { return nil }
        if Self.isNull(v) { return nil }
        return v
    }

    mutating func int(_ name: String, _ fallback: Int, _ problems: inout [ConfigError.Problem]) -> Int {
        guard let n = node(name) else { return fallback }
        return Self.int(n, key: key(name), &problems) ?? fallback
    }

    mutating func optionalInt(_ name: String, _ problems: inout [ConfigError.Problem]) -> Int? {
        guard let n = node(name) else { return nil }
        return Self.int(n, key: key(name), &problems)
    }

    mutating func double(_ name: String, _ fallback: Double, _ problems: inout [ConfigError.Problem]) -> Double {
        guard let n = node(name) else { return fallback }
        return Self.double(n, key: key(name), &problems) ?? fallback
    }

    mutating func bool(_ name: String, _ fallback: Bool, _ problems: inout [ConfigError.Problem]) -> Bool {
        guard let n = node(name) else { return fallback }
        if case .scalar(let s) = n, s.style == .plain || s.style == .any, let b = Bool.construct(from: s) { return b }
        problems.append(.init(.wrongType, key: key(name), "expected true or false, found \(Self.describe(n))"))
        return fallback
    }

    mutating func string(_ name: String, _ fallback: String?, _ problems: inout [ConfigError.Problem]) -> String? {
        guard let n = node(name) else { return fallback }
        if case .scalar(let s) = n { return s.string }
        problems.append(.init(.wrongType, key: key(name), "expected a string, found \(Self.describe(n))"))
        return fallback
    }

    mutating func intList(_ name: String, _ problems: inout [ConfigError.Problem]) -> [Int]? {
        guard let n = node(name) else { return nil }
        guard case .sequence(let seq) = n else {
            problems.append(.init(.wrongType, key: key(name), "expected a list of integers like [0, 2], found \(Self.describe(n))"))
            return nil
        }
        var out: [Int] = []
        for (i, item) in seq.enumerated() {
            guard let v = Self.int(item, key: "\(key(name))[\(i)]", &problems) else { return nil }
            out.append(v)
        }
        return out
    }

    mutating func doubleList(_ name: String, _ problems: inout [ConfigError.Problem]) -> [Double]? {
        guard let n = node(name) else { return nil }
        guard case .sequence(let seq) = n else {
            problems.append(.init(.wrongType, key: key(name), "expected a list of numbers like [0.9, 0.95], found \(Self.describe(n))"))
            return nil
        }
        var out: [Double] = []
        for (i, item) in seq.enumerated() {
            guard let v = Self.double(item, key: "\(key(name))[\(i)]", &problems) else { return nil }
            out.append(v)
        }
        return out
    }

    /// Reports every key present in the mapping but never asked for, with the closest known key.
    func reportUnknown(known: [String], _ problems: inout [ConfigError.Problem]) {
        for (k, _) in entries where !consumed.contains(k) && !known.contains(k) {
            var message = "unknown key"
            if let best = closest(to: k, among: known) { message += " (did you mean `\(key(best))`?)" }
            message += "; known keys here: \(known.joined(separator: ", "))"
            problems.append(.init(.unknownKey, key: key(k), message))
        }
    }

    // MARK: scalars

    static func isNull(_ n: Node) -> Bool {
        guard case .scalar(let s) = n, s.style == .plain || s.style == .any else { return false }
        return s.string.isEmpty || s.string == "~" || s.string == "null" || s.string == "Null" || s.string == "NULL"
    }

    static func int(_ n: Node, key: String, _ problems: inout [ConfigError.Problem]) -> Int? {
        if case .scalar(let s) = n, s.style == .plain || s.style == .any {
            if let v = Int(s.string) { return v }
            // 1e3 or 2.0 written for an integer: accept only if exactly integral.
            if let d = Double(s.string), d.rounded() == d, abs(d) < 9.0e15 { return Int(d) }
        }
        problems.append(.init(.wrongType, key: key, "expected an integer, found \(describe(n))"))
        return nil
    }

    static func double(_ n: Node, key: String, _ problems: inout [ConfigError.Problem]) -> Double? {
        if case .scalar(let s) = n, s.style == .plain || s.style == .any {
            if let v = Double(s.string) ?? Double.construct(from: s), v.isFinite { return v }
        }
        problems.append(.init(.wrongType, key: key, "expected a finite number, found \(describe(n))"))
        return nil
    }

    static func describe(_ n: Node) -> String {
        switch n {
        case .scalar(let s):
            switch s.style {
            case .singleQuoted, .doubleQuoted: return "string \"\(s.string)\""
            default: return "`\(s.string)`"
            }
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }
}

/// The known key closest to `word` by edit distance, if it is close enough to be a plausible typo.
func closest(to word: String, among known: [String]) -> String? {
    var best: (String, Int)?
    for k in known {
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
