/// The worker's side of the connection, as a pure state machine (no sockets, no clock).
///
/// connecting → (Welcome) → joined → (coordinator silent for `timeoutMs`) → lost → (after backoff)
/// → connecting → ... A Hello unanswered for `timeoutMs` also counts as lost. The backoff doubles
/// from `backoffBaseMs` per failed attempt up to `backoffCapMs` and resets on Welcome, so a worker
/// keeps retrying while a coordinator restarts and rejoins the resumed job (same job id).
/// A Refuse or a Stop ends it.
public struct WorkerConnection: Sendable {
    public enum State: Sendable, Equatable {
        case idle
        case connecting(attempt: Int, since: Millis)
        case joined(jobID: UInt64, lastHeard: Millis)
        case lost(attempt: Int, retryAt: Millis)
        case stopped(StopReason)
    }

    /// Why the connection ended: the worker's exit status follows from it.
    public enum StopReason: Sendable, Equatable, CustomStringConvertible {
        /// The coordinator refused this worker (wrong backbone, protocol version, ...): exit non-zero.
        case refused(String)
        /// The coordinator ended the job.
        case jobOver
        /// The worker left on purpose (a signal).
        case left

        public var description: String {
            switch self {
            case .refused(let why): "the coordinator refused this worker: \(why)"
            case .jobOver: "the coordinator stopped the job"
            case .left: "left the job"
            }
        }
    }

    public enum Directive: Sendable, Equatable {
        /// Open a fresh DEALER to the coordinator (closing any old one, dropping what it had queued).
        case connect
        /// Close the DEALER (the coordinator is gone; queued messages are stale).
        case disconnect
        case send(Envelope)
        /// Admitted: load the config, take the parameters, start taking work.
        case joined(jobID: UInt64, step: UInt64, Welcome)
        case log(String)
        /// Stop with this reason.
        case stop(StopReason)
    }

    public let hello: Hello
    public let heartbeatMs: Millis
    public let timeoutMs: Millis
    public let backoffBaseMs: Millis
    public let backoffCapMs: Millis
    public private(set) var state: State = .idle
    /// The last step the coordinator told us about (stamped on our heartbeats).
    public private(set) var step: UInt64 = 0
    private var nextHeartbeat: Millis = 0

    public init(hello: Hello, heartbeatMs: Millis, timeoutMs: Millis, backoffBaseMs: Millis = 100, backoffCapMs: Millis = 10_000) {
        self.hello = hello
        self.heartbeatMs = heartbeatMs
        self.timeoutMs = timeoutMs
        self.backoffBaseMs = backoffBaseMs
        self.backoffCapMs = backoffCapMs
    }

    /// The wait before retry number `attempt` (1-based): base·2^(attempt-1), capped.
    public func backoff(attempt: Int) -> Millis {
        let shift = min(max(attempt - 1, 0), 40)
        let (v, o) = backoffBaseMs.multipliedReportingOverflow(by: Millis(1) << shift)
        return o ? backoffCapMs : min(v, backoffCapMs)
    }

    public var jobID: UInt64? {
        if case .joined(let j, _) = state { return j }
        return nil
    }

    public mutating func start(now: Millis) -> [Directive] {
        guard case .idle = state else { return [] }
        return connect(attempt: 1, now: now)
    }

    /// A message from the coordinator.
    public mutating func received(_ e: Envelope, now: Millis) -> [Directive] {
        switch state {
        case .idle, .stopped, .lost:
            return [.log("ignored \(e.message.kind) while \(describe)")]
        case .connecting:
            switch e.message {
            case .welcome(let w):
                state = .joined(jobID: e.jobID, lastHeard: now)
                step = e.step
                nextHeartbeat = now + heartbeatMs
                return [.log("joined job \(hex(e.jobID)) at step \(e.step)"), .joined(jobID: e.jobID, step: e.step, w)]
            case .refuse(let reason):
                return stop(.refused(reason))
            case .stop:
                return stop(.jobOver)
            default:
                return [.log("ignored \(e.message.kind) before Welcome")]
            }
        case .joined(let job, _):
            if case .welcome = e.message {
                // The coordinator restarted (or re-welcomed us): take the new job state.
                state = .connecting(attempt: 1, since: now)
                return received(e, now: now)
            }
            guard e.jobID == job else {
                return [.log("dropped \(e.message.kind) for job \(hex(e.jobID)); joined job \(hex(job))")]
            }
            state = .joined(jobID: job, lastHeard: now)
            // The training step (an evaluation's envelopes carry evaluationStep(_:), which would stick).
            if evaluatedStep(e.step) == nil { step = max(step, e.step) }
            switch e.message {
            case .stop:
                return stop(.jobOver)
            case .refuse(let reason):
                return stop(.refused(reason))
            default:
                return []
            }
        }
    }

    /// When ``tick(now:)`` next has something to do (a heartbeat, a timeout, a retry); nil when stopped.
    public var nextDeadline: Millis? {
        switch state {
        case .idle, .stopped: nil
        case .connecting(_, let since): since + timeoutMs + 1
        case .joined(_, let lastHeard): min(lastHeard + timeoutMs + 1, nextHeartbeat)
        case .lost(_, let retryAt): retryAt
        }
    }

    /// Heartbeats, timeouts and retries. Call when ``nextDeadline`` is reached.
    public mutating func tick(now: Millis) -> [Directive] {
        switch state {
        case .idle, .stopped:
            return []
        case .connecting(let attempt, let since):
            guard now - since > timeoutMs else { return [] }
            return lose(attempt: attempt, now: now, why: "no answer to Hello after \(now - since) ms")
        case .joined(let job, let lastHeard):
            if now - lastHeard > timeoutMs {
                return lose(attempt: 0, now: now, why: "coordinator silent for \(now - lastHeard) ms")
            }
            guard now >= nextHeartbeat else { return [] }
            nextHeartbeat = now + heartbeatMs
            return [.send(Envelope(jobID: job, step: step, .heartbeat))]
        case .lost(let attempt, let retryAt):
            guard now >= retryAt else { return [] }
            return connect(attempt: attempt + 1, now: now)
        }
    }

    /// Leaving on purpose: say Bye with the micro-batches not finished.
    public mutating func leave(unfinished: [UInt32]) -> [Directive] {
        defer { state = .stopped(.left) }
        guard case .joined(let job, _) = state else { return [] }
        return [.send(Envelope(jobID: job, step: step, .bye(unfinished: unfinished)))]
    }

    private mutating func stop(_ reason: StopReason) -> [Directive] {
        state = .stopped(reason)
        return [.stop(reason)]
    }

    private mutating func connect(attempt: Int, now: Millis) -> [Directive] {
        state = .connecting(attempt: attempt, since: now)
        return [.connect, .send(Envelope(jobID: 0, step: 0, .hello(hello)))]
    }

    private mutating func lose(attempt: Int, now: Millis, why: String) -> [Directive] {
        let wait = backoff(attempt: attempt + 1)
        state = .lost(attempt: attempt, retryAt: now + wait)
        return [.log("\(why); retrying in \(wait) ms"), .disconnect]
    }

    private var describe: String {
        switch state {
        case .idle: "idle"
        case .connecting: "connecting"
        case .joined: "joined"
        case .lost: "disconnected"
        case .stopped(let r): "stopped (\(r))"
        }
    }
}
