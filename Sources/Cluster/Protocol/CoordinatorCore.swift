import Model

/// The coordinator's protocol logic in one pure struct: admission (Hello → Welcome or Refuse; a Hello
/// with an empty backbone is a probe, answered with a parameter-less Welcome carrying the job config),
/// ``Membership`` and the current step's ``StepScheduler`` wired together. The shell decodes frames,
/// passes envelopes in, ticks at ``nextDeadline``, carries out the ``Directive``s, and on `.stepComplete`
/// combines the results with ``ExactSum``, applies the optimizer and calls ``beginStep``.
public struct CoordinatorCore: Sendable {
    public let jobID: UInt64
    /// The canonical config JSON sent in every Welcome.
    public let configJSON: String
    /// The fingerprint of the frozen backbone; a worker holding other weights is refused.
    public let backbone: String
    public private(set) var membership: Membership
    public private(set) var scheduler: StepScheduler?
    /// The step whose parameters ``params`` are.
    public private(set) var step: UInt64
    public private(set) var params: TensorSet

    public init(jobID: UInt64, configJSON: String, backbone: String, step: UInt64, params: TensorSet,
                heartbeatMs: Millis, timeoutMs: Millis) {
        self.jobID = jobID
        self.configJSON = configJSON
        self.backbone = backbone
        self.step = step
        self.params = params
        self.membership = Membership(jobID: jobID, heartbeatMs: heartbeatMs, timeoutMs: timeoutMs)
        membership.step = step
    }

    /// Starts a step at `params` (the parameters after the previous step). Every worker gets them with
    /// its first Work of the step.
    ///
    /// - warning: Tensors are sent without a copy; do not update `params` in place afterwards (the
    ///   optimizer should write the next step's parameters into fresh tensors, or copy before sending).
    public mutating func beginStep(_ step: UInt64, epoch: UInt64, microBatches: [[Int64]], dropout: Bool,
                                   params: TensorSet, backupAfterMs: Millis, now: Millis) -> [Directive] {
        self.step = step
        self.params = params
        membership.step = step
        var s = StepScheduler(jobID: jobID, step: step, epoch: epoch, microBatches: microBatches, dropout: dropout,
                              params: params, backupAfterMs: backupAfterMs)
        let out = s.start(workers: membership.live, haveParams: [], now: now)
        scheduler = s
        return out
    }

    /// A message that decoded. Non-members may only say Hello.
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
            if !unfinished.isEmpty { out.append(.log(.info, "\(id) left with unfinished micro-batches \(unfinished)")) }
            out += scheduler?.workerGone(id, now: now) ?? []
        case .result:
            out += scheduler?.received(e, from: id, now: now) ?? []
        case .heartbeat:
            break
        default:
            out.append(.log(.warning, "ignored unexpected \(e.message.kind) from \(id)"))
        }
        return out
    }

    /// A message that did not decode. A peer speaking another protocol version is refused so it stops
    /// retrying; anything else is only logged.
    public func undecodable(_ error: WireError, from id: WorkerID) -> [Directive] {
        var out: [Directive] = [.log(.warning, "dropped a malformed message from \(id): \(error)")]
        if case .unsupportedVersion(let v) = error {
            out.append(.send(to: id, Envelope(jobID: jobID, step: step,
                .refuse(reason: "protocol version \(v), the coordinator speaks \(wireProtocolVersion): run the same build"))))
        }
        return out
    }

    /// When ``tick(now:)`` next has something to do (a heartbeat, a death, a backup): the shell sleeps
    /// until then or until a message arrives, and polls nothing.
    public var nextDeadline: Millis? {
        [membership.nextDeadline, scheduler?.nextDeadline].compactMap { $0 }.min()
    }

    /// Deaths, heartbeats and backups. Call when ``nextDeadline`` is reached.
    public mutating func tick(now: Millis) -> [Directive] {
        var out: [Directive] = []
        for d in membership.tick(now: now) {
            out.append(d)
            if case .workerDied(let id, _) = d { out += scheduler?.workerGone(id, now: now) ?? [] }
        }
        return out + (scheduler?.tick(now: now) ?? [])
    }

    private mutating func hello(_ h: Hello, from id: WorkerID, now: Millis) -> [Directive] {
        if h.protocolVersion != wireProtocolVersion {
            return refuse(id, "protocol version \(h.protocolVersion), the coordinator speaks \(wireProtocolVersion)")
        }
        if h.backbone.isEmpty {
            // A worker started without a job file asks what to load: answer with the config only, and
            // admit it once it says Hello again with the fingerprint of the weights it then holds.
            return [.log(.info, "\(h.workerName) asked for the job description"),
                    .send(to: id, Envelope(jobID: jobID, step: step, .welcome(Welcome(configJSON: configJSON, params: TensorSet()))))]
        }
        if h.backbone != backbone {
            return refuse(id, "wrong backbone: the worker holds \(h.backbone), the job needs \(backbone)")
        }
        var out = membership.join(id, name: h.workerName, now: now)
        out.append(.send(to: id, Envelope(jobID: jobID, step: step, .welcome(Welcome(configJSON: configJSON, params: params)))))
        if scheduler != nil { out += scheduler!.workerJoined(id, haveParams: scheduler!.step == step, now: now) }
        return out
    }

    private func refuse(_ id: WorkerID, _ reason: String) -> [Directive] {
        [.log(.warning, "refused \(id): \(reason)"), .send(to: id, Envelope(jobID: jobID, step: step, .refuse(reason: reason)))]
    }
}
