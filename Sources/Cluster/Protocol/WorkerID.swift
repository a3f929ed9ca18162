/// A worker as the coordinator sees it: the ZeroMQ routing identity its DEALER presented, and under
/// CURVE the ZAP User-Id of its connection (the key file that admitted it). Membership is bound to both,
/// so a peer with another key cannot take a member's place by presenting its routing id.
public struct WorkerID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var identity: [UInt8]
    /// The ZAP User-Id (under CURVE), nil on an unauthenticated socket.
    public var key: String?

    public init(_ identity: [UInt8], key: String? = nil) {
        self.identity = identity
        self.key = key
    }
    public init(_ text: String, key: String? = nil) { self.init(Array(text.utf8), key: key) }

    /// Who is behind the connection: the key under CURVE (a peer may reconnect under another routing id,
    /// or present several), else the routing id.
    public var principal: String { key.map { "key:\($0)" } ?? "id:" + identity.map { String($0, radix: 16) }.joined(separator: ".") }

    public static func < (a: WorkerID, b: WorkerID) -> Bool {
        if a.identity != b.identity { return a.identity.lexicographicallyPrecedes(b.identity) }
        return (a.key ?? "") < (b.key ?? "")
    }

    /// Printable and bounded whatever the peer chose (a routing id is up to 255 arbitrary bytes).
    public var description: String {
        let id: String
        if !identity.isEmpty, identity.count <= 64, identity.allSatisfy({ (0x21...0x7e).contains($0) }) {
            id = String(decoding: identity, as: UTF8.self)
        } else {
            id = "0x" + identity.prefix(32).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
                + (identity.count > 32 ? "..." : "")
        }
        return key.map { "\(id) [key \(Sanitized.text($0))]" } ?? id
    }
}

/// Text a peer chose (a worker name, a refusal reason), made safe to print: printable ASCII only, other
/// characters escaped, at most `limit` characters; a newline or an escape sequence cannot forge a log line.
public enum Sanitized {
    public static func text(_ s: String, limit: Int = 64) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            if out.count >= limit { out += "..."; break }
            if (0x20...0x7e).contains(scalar.value) { out.unicodeScalars.append(scalar) } else {
                out += scalar.value < 0x100 ? "\\x" + String(format2(scalar.value)) : "\\u{\(String(scalar.value, radix: 16))}"
            }
        }
        return out
    }

    private static func format2(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return s.count == 1 ? "0" + s : s
    }
}
