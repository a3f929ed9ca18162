/// Who is in the job, as a pure state machine (no sockets, no clock): the coordinator's shell feeds it
/// joins, every message it hears and ticks, and carries out the directives it returns.
///
/// - A worker joins with its routing identity and name (after the shell accepted its Hello).
/// - Any message from a member refreshes its last-seen time.
/// - A member silent for more than `timeoutMs` is declared dead (``Directive/workerDied(_:name:)``).
/// - The coordinator heartbeats every member every `heartbeatMs`.
/// - A member that says Bye leaves (``Directive/workerLeft(_:name:)``).
public struct Membership: Sendable {
    public struct Member: Sendable, Equatable {
        public var id: WorkerID
        public var name: String
        public var joinedAt: Millis
        public var lastSeen: Millis
    }

    public let jobID: UInt64
    public let heartbeatMs: Millis
    public let timeoutMs: Millis
    /// The step stamped on outgoing heartbeats (the shell keeps it current).
    public var step: UInt64 = 0
    public private(set) var members: [WorkerID: Member] = [:]
    private var nextHeartbeat: Millis?

    public init(jobID: UInt64, heartbeatMs: Millis, timeoutMs: Millis) {
        self.jobID = jobID
        self.heartbeatMs = heartbeatMs
        self.timeoutMs = timeoutMs
    }

    /// Live members in a stable order (by identity), for deterministic scheduling.
    public var live: [WorkerID] { members.keys.sorted() }

    public func contains(_ id: WorkerID) -> Bool { members[id] != nil }

    /// Admits a worker. A second Hello from a member (it restarted or lost us) counts as a fresh join.
    public mutating func join(_ id: WorkerID, name: String, now: Millis) -> [Directive] {
        let rejoin = members[id] != nil
        members[id] = Member(id: id, name: name, joinedAt: now, lastSeen: now)
        if nextHeartbeat == nil { nextHeartbeat = now + heartbeatMs }
        return [.log(.info, "worker \(name) (\(id)) \(rejoin ? "rejoined" : "joined"); \(members.count) live"),
                .workerJoined(id, name: name)]
    }

    /// Any message from `id` shows it is alive. Messages from non-members are reported, not trusted.
    public mutating func heard(from id: WorkerID, now: Millis) -> [Directive] {
        guard members[id] != nil else {
            return [.log(.debug, "message from \(id), which is not a member (it must say Hello first)")]
        }
        members[id]!.lastSeen = max(members[id]!.lastSeen, now)
        return []
    }

    /// Takes a member out (it was evicted, or replaced by its own reconnection).
    public mutating func remove(_ id: WorkerID, reason: String) -> [Directive] {
        guard let m = members.removeValue(forKey: id) else { return [] }
        return [.log(.warning, "worker \(m.name) (\(id)) removed: \(reason); \(members.count) live")]
    }

    /// The worker said Bye.
    public mutating func leave(_ id: WorkerID, now: Millis) -> [Directive] {
        guard let m = members.removeValue(forKey: id) else { return [] }
        return [.log(.info, "worker \(m.name) (\(id)) left; \(members.count) live"), .workerLeft(id, name: m.name)]
    }

    /// Declares silent members dead and sends heartbeats when due. Call when ``nextDeadline`` is reached.
    public mutating func tick(now: Millis) -> [Directive] {
        var out: [Directive] = []
        for id in live {
            let m = members[id]!
            if now - m.lastSeen > timeoutMs {
                members[id] = nil
                out.append(.log(.warning, "worker \(m.name) (\(id)) silent for \(now - m.lastSeen) ms (timeout \(timeoutMs) ms): declared dead"))
                out.append(.workerDied(id, name: m.name))
            }
        }
        if let due = nextHeartbeat, now >= due {
            for id in live { out.append(.send(to: id, Envelope(jobID: jobID, step: step, .heartbeat))) }
            // Skip missed beats rather than bursting them after a stall.
            nextHeartbeat = due + heartbeatMs * ((now - due) / heartbeatMs + 1)
        }
        return out
    }

    /// When ``tick(now:)`` next has something to do.
    public var nextDeadline: Millis? {
        let deaths = members.values.map { $0.lastSeen + timeoutMs + 1 }.min()
        return [deaths, nextHeartbeat].compactMap { $0 }.min()
    }
}
