/// Milliseconds on a monotonic clock. The state machines never read a clock: the shell passes `now`.
public typealias Millis = Int64

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

/// What the coordinator-side state machines (``Membership``, ``StepScheduler``) ask their shell to do.
public enum Directive: Sendable, Equatable {
    public enum Level: Sendable, Equatable { case debug, info, warning }

    /// Send this envelope to that worker.
    case send(to: WorkerID, Envelope)
    case log(Level, String)
    case workerJoined(WorkerID, name: String)
    /// Silent for longer than `timeout_ms`: its work must go to others (``StepScheduler/workerGone(_:now:)``).
    case workerDied(WorkerID, name: String)
    /// Said Bye.
    case workerLeft(WorkerID, name: String)
    /// Every micro-batch of the step has exactly one accepted result.
    case stepComplete(step: UInt64)
}
