import Model

/// The coordinator's protocol logic in one pure struct: admission, ``Membership`` and the current
/// step's ``StepScheduler`` wired together. The shell decodes frames, passes envelopes in, ticks at
/// ``nextDeadline``, carries out the ``Directive``s, and on `.stepComplete` combines the results with
/// ``ExactSum``, applies the optimizer and calls ``beginStep``.
///
/// Admission (DESIGN.md §7):
/// - A Hello with an empty backbone is a probe, answered with a parameter-less Welcome carrying only
///   what loading needs (``JobConfig/workerPart``); never the fingerprint the worker lacks.
/// - A worker is admitted when it speaks this protocol version, its backbone fingerprint equals the
///   job's, and its compute id (``JobConfig/computeID`` of the config it parsed) equals the job's. A
///   refusal names what differs (the vision weights, the language config...) without revealing the
///   fingerprint. Membership is capped at ``maxMembers``.
/// - Under CURVE a member is bound to its key (``WorkerID/key``): messages on a member's routing id with
///   another key are not the member's. A Hello presenting a member's routing id with another key replaces
///   that member (ZeroMQ routes the id to the newest connection anyway); the old member's work is
///   requeued and it rejoins when it reconnects.
/// - Only members' messages reach the scheduler; the shell decodes nothing but the header of a message
///   from a peer for which ``admits(_:kind:)`` is false.
public struct CoordinatorCore: Sendable {
    /// More members than this are refused (a bound on the coordinator's state per peer).
    public static let maxMembers = 1024

    public let jobID: UInt64
    /// The compute id admitted workers must report.
    public let computeID: UInt64
    /// The canonical config JSON of the job's worker part, sent in every Welcome.
    public let configJSON: String
    /// The fingerprint of the frozen backbone; a worker holding other weights is refused.
    public let backbone: String
    public let policy: StepScheduler.Policy
    public private(set) var membership: Membership
    public private(set) var scheduler: StepScheduler?
    /// The step whose parameters ``params`` are.
    public private(set) var step: UInt64
    public private(set) var params: TensorSet

    public init(jobID: UInt64, computeID: UInt64, configJSON: String, backbone: String, step: UInt64, params: TensorSet,
                heartbeatMs: Millis, timeoutMs: Millis, policy: StepScheduler.Policy) {
        self.jobID = jobID
        self.computeID = computeID
        self.configJSON = configJSON
        self.backbone = backbone
        self.step = step
        self.params = params
        self.policy = policy
        self.membership = Membership(jobID: jobID, heartbeatMs: heartbeatMs, timeoutMs: timeoutMs)
        membership.step = step
    }

    /// Starts a step at `params` (the parameters after the previous step). Every worker gets them with
    /// its first Work of the step.
    ///
    /// - warning: Tensors are sent without a copy; do not update `params` in place afterwards (the
    ///   optimizer should write the next step's parameters into fresh tensors, as `TrainState` does).
    public mutating func beginStep(_ step: UInt64, epoch: UInt64, microBatches: [[Int64]], dropout: Bool,
                                   params: TensorSet, backupAfterMs: Millis, now: Millis) -> [Directive] {
        self.step = step
        self.params = params
        membership.step = step
        var p = policy
        p.backupAfterMs = backupAfterMs
        var s = StepScheduler(jobID: jobID, step: step, epoch: epoch, microBatches: microBatches, dropout: dropout,
                              params: params, policy: p)
        let out = s.start(workers: membership.live, haveParams: [], now: now)
        scheduler = s
        return out
    }

    /// Starts an evaluation of `units` (rows of `dataset`) at `params`, the parameters after `steps` steps,
    /// scheduled like a training step (membership, failures, deadlines and fencing apply); it ends with
    /// `.evaluationComplete`. `maxNewTokens` 0 scores; otherwise it captions.
    public mutating func beginEvaluation(after steps: UInt64, dataset: String, units: [[Int64]], maxNewTokens: UInt32 = 0,
                                         eos: Int32 = -1, params: TensorSet, vocabularySize: Int, now: Millis) -> [Directive] {
        let fence = evaluationStep(steps)
        self.step = fence
        self.params = params
        membership.step = fence
        var s = StepScheduler(jobID: jobID, step: fence, task: .evaluation(dataset: dataset, maxNewTokens: maxNewTokens, eos: eos),
                              units: units, params: params, policy: policy, vocabularySize: vocabularySize)
        let out = s.start(workers: membership.live, haveParams: [], now: now)
        scheduler = s
        return out
    }

    /// Whether a message of `kind` from `id` may be decoded past its header: anyone may say Hello (it is
    /// small and bounded); everything else only from a member.
    public func admits(_ id: WorkerID, kind: UInt8) -> Bool {
        kind == MessageKind.hello.rawValue || membership.contains(id)
    }

    /// A message that decoded.
    public mutating func received(_ e: Envelope, from id: WorkerID, now: Millis) -> [Directive] {
        if case .hello(let h) = e.message { return hello(h, from: id, now: now) }
        guard membership.contains(id) else {
            return [.log(.debug, "ignored \(e.message.kind) from \(id), which has not joined")]
        }
        guard e.jobID == jobID else {
            return [.log(.warning, "dropped \(e.message.kind) from \(id) for job \(hex(e.jobID)), this job is \(hex(jobID))")]
        }
        var out = membership.heard(from: id, now: now)
        switch e.message {
        case .bye(let unfinished):
            out += membership.leave(id, now: now)
            if !unfinished.isEmpty { out.append(.log(.info, "\(id) left with unfinished micro-batches \(unfinished.prefix(16))")) }
            out += scheduler?.workerGone(id, now: now) ?? []
        case .result, .failed, .evalResult:
            out += apply(scheduler?.received(e, from: id, now: now) ?? [], now: now)
        case .heartbeat:
            break
        default:
            out += apply([.workerEvicted(id, reason: "sent \(e.message.kind), which only the coordinator sends")], now: now)
        }
        return out
    }

    /// A message that did not decode. A peer speaking another protocol version is refused so it stops
    /// retrying; a member that sends garbage is evicted; anything else is only logged.
    public mutating func undecodable(_ error: WireError, from id: WorkerID, now: Millis) -> [Directive] {
        var out: [Directive] = [.log(.warning, "dropped a malformed message from \(id): \(error)")]
        if case .unsupportedVersion(let v) = error {
            out += refusal(id, "protocol version \(v), the coordinator speaks \(wireProtocolVersion): run the same build")
        } else if membership.contains(id) {
            out += apply([.workerEvicted(id, reason: "sent a malformed message (\(error))")], now: now)
        }
        return out
    }

    /// Sending to `id` failed (the peer's connection is gone): it is gone too.
    public mutating func sendFailed(to id: WorkerID, now: Millis) -> [Directive] {
        guard membership.contains(id) else { return [] }
        var out = membership.remove(id, reason: "its connection is gone (a send to it failed)")
        out += scheduler?.workerGone(id, now: now) ?? []
        return out
    }

    /// When ``tick(now:)`` next has something to do (a heartbeat, a death, a backup, a work deadline):
    /// the shell sleeps until then or until a message arrives, and polls nothing.
    public var nextDeadline: Millis? {
        [membership.nextDeadline, scheduler?.nextDeadline].compactMap { $0 }.min()
    }

    /// Deaths, heartbeats, backups and work deadlines. Call when ``nextDeadline`` is reached.
    public mutating func tick(now: Millis) -> [Directive] {
        var out: [Directive] = []
        for d in membership.tick(now: now) {
            out.append(d)
            if case .workerDied(let id, _) = d { out += scheduler?.workerGone(id, now: now) ?? [] }
        }
        return out + apply(scheduler?.tick(now: now) ?? [], now: now)
    }

    // MARK: admission

    private mutating func hello(_ h: Hello, from id: WorkerID, now: Millis) -> [Directive] {
        let name = Sanitized.text(h.workerName)
        if h.protocolVersion != wireProtocolVersion {
            return refusal(id, "protocol version \(h.protocolVersion), the coordinator speaks \(wireProtocolVersion): run the same build")
        }
        if h.isProbe {
            // A worker started without a job file asks what to load: answer with what loading needs, and
            // admit it once it says Hello again with the fingerprint of the weights it then holds.
            return [.log(.info, "\(name) (\(id)) asked what to load"),
                    .send(to: id, Envelope(jobID: jobID, step: step, .welcome(Welcome(configJSON: configJSON, params: TensorSet()))))]
        }
        if let difference = Self.difference(h.backbone, backbone) {
            return refusal(id, "wrong backbone: the worker's \(difference) differ from the job's; point it at the job's model directories")
        }
        if h.computeID != computeID {
            return refusal(id, "the worker's job config differs from the coordinator's in a key other than a path "
                + "(model, data or compute settings); start it without --config, or with the job's file (only paths may be overridden)")
        }
        var out: [Directive] = []
        if let owner = membership.live.first(where: { $0.identity == id.identity && $0 != id }) {
            // The same routing id under another key. ZeroMQ has already handed the routing id to this
            // newest connection (ROUTER_HANDOVER), so messages for the old member would reach this one:
            // the old member is taken out and its work requeued (nothing is lost, nothing is misdirected),
            // and it comes back, taking the routing id again, when it reconnects. A peer can thus disturb
            // a member whose routing id it presents, never speak or be paid as it.
            out += membership.remove(owner, reason: "its routing id was taken by a connection with another key (\(id))")
            out += scheduler?.workerGone(owner, now: now) ?? []
        }
        if let previous = membership.live.first(where: { $0.key != nil && $0.key == id.key && $0 != id }) {
            // The same key under a new routing id: the worker restarted.
            out += membership.remove(previous, reason: "it reconnected as \(id)")
            out += scheduler?.workerGone(previous, now: now) ?? []
        }
        if !membership.contains(id), membership.members.count >= Self.maxMembers {
            return refusal(id, "the job already has \(Self.maxMembers) workers")
        }
        out += membership.join(id, name: name, now: now)
        out.append(.send(to: id, Envelope(jobID: jobID, step: step, .welcome(Welcome(configJSON: configJSON, params: params)))))
        if scheduler != nil { out += apply(scheduler!.workerJoined(id, haveParams: scheduler!.step == step, now: now), now: now) }
        return out
    }

    /// Which parts of two backbone fingerprints (`vision=...;language=...`, each part `files|config:...`)
    /// differ, in words; nil when they are equal.
    static func difference(_ mine: String, _ job: String) -> String? {
        guard mine != job else { return nil }
        func parts(_ f: String) -> [String: (weights: Substring, config: Substring)] {
            var out: [String: (Substring, Substring)] = [:]
            for part in f.split(separator: ";") {
                guard let eq = part.firstIndex(of: "=") else { continue }
                let value = part[part.index(after: eq)...]
                let pieces = value.split(separator: "|", maxSplits: 1)
                out[String(part[..<eq])] = (pieces.first ?? "", pieces.count > 1 ? pieces[1] : "")
            }
            return out
        }
        let a = parts(mine), b = parts(job)
        var what: [String] = []
        for tower in ["vision", "language"] {
            if a[tower]?.weights != b[tower]?.weights { what.append("\(tower) weights") }
            if a[tower]?.config != b[tower]?.config { what.append("\(tower) config.json") }
        }
        return what.isEmpty ? "backbone" : what.joined(separator: " and ")
    }

    private func refusal(_ id: WorkerID, _ reason: String) -> [Directive] {
        [.log(.warning, "refused \(id): \(reason)"), .send(to: id, Envelope(jobID: jobID, step: step, .refuse(reason: reason)))]
    }

    /// Carries out the scheduler's evictions here (membership and the refusal), passing the rest on.
    private mutating func apply(_ directives: [Directive], now: Millis) -> [Directive] {
        var out: [Directive] = []
        for d in directives {
            out.append(d)
            guard case .workerEvicted(let id, let reason) = d, membership.contains(id) else { continue }
            out += membership.remove(id, reason: "evicted: \(reason)")
            out += scheduler?.workerGone(id, now: now) ?? []
            out.append(.send(to: id, Envelope(jobID: jobID, step: step, .refuse(reason: "evicted: \(reason)"))))
        }
        return out
    }
}
