/// A worker as the coordinator's ROUTER sees it: its ZeroMQ routing identity.
public struct WorkerID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var identity: [UInt8]
    public init(_ identity: [UInt8]) { self.identity = identity }
    public init(_ text: String) { self.identity = Array(text.utf8) }

    public static func < (a: WorkerID, b: WorkerID) -> Bool { a.identity.lexicographicallyPrecedes(b.identity) }

    public var description: String {
        if !identity.isEmpty, identity.allSatisfy({ (0x21...0x7e).contains($0) }) {
            return String(decoding: identity, as: UTF8.self)
        }
        return "0x" + identity.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
