import Model

/// Hands out the micro-batches of one optimizer step, as a pure state machine (no sockets, no clock).
///
/// Queue depth is one outstanding micro-batch per worker. A micro-batch takes seconds to compute while
/// a round trip takes well under a millisecond on a LAN, so deeper queues would hide almost no latency;
/// depth one means a dead worker takes back at most one micro-batch, and the step's tail balances
/// itself (a fast worker is never stuck behind a queued batch on a slow one).
///
/// - Every micro-batch `0..<k` is assigned to an idle live worker; a worker that does not hold this
///   step's parameters gets a Params message first (this covers step starts and mid-step joins).
/// - A dead or departed worker's micro-batch goes back to the queue and on to others.
/// - Results for another job or another step are dropped with a log directive (fencing).
/// - A result is accepted only from a worker that holds that micro-batch, once, and only if it is a
///   valid record (``check(_:samples:)``): the parameters' names and shapes in their order, a label count
///   the micro-batch can have, finite values within ``Policy/maxGradient``. Anything else is dropped,
///   the micro-batch requeued and the sender evicted (``Directive/workerEvicted(_:reason:)``).
/// - A worker that cannot compute its micro-batch says so (Failed); so does a deadline,
///   ``Policy/workTimeoutMs``, for a worker that heartbeats but never answers (it is evicted). The
///   micro-batch goes back to the queue, preferably to another worker; when it has failed
///   ``Policy/maxFailures`` times, or on every live worker (two or more), the step fails
///   (``Directive/stepFailed(step:microBatch:reasons:)``) and the job ends with the reasons.
/// - When the queue is empty and a worker is idle while another's micro-batch has been outstanding for
///   ``Policy/backupAfterMs``, and for twice as long as the slowest micro-batch accepted so far in this
///   step took, the idle worker computes it too (at most two copies); whichever result arrives first is
///   accepted. Results are bitwise identical whichever worker computed them (DESIGN.md §6). A worker
///   cannot drop a copy it has begun, so a backup of a micro-batch that is merely as slow as its peers
///   would only hold that worker into the next step; the second condition keeps backups for stragglers.
/// - The step completes (``Directive/stepComplete(step:results:)``, once, with the results in
///   micro-batch order) when every micro-batch has exactly one accepted result.
public struct StepScheduler: Sendable {
    /// How a step treats slow, failing and misbehaving workers.
    public struct Policy: Sendable, Equatable {
        /// How long a micro-batch may be outstanding before an idle worker backs it up.
        public var backupAfterMs: Millis
        /// How long a micro-batch may be outstanding at all before its worker is evicted.
        public var workTimeoutMs: Millis
        /// Failures of one micro-batch that end the job.
        public var maxFailures = 3
        /// Label tokens a sample can have (the dataset's tokens per row).
        public var maxLabelsPerSample: Int64
        /// The largest magnitude a summed gradient element may have: legitimate training is many orders
        /// below it, and its square stays finite in float32 (AdamW's second moment).
        public static let maxGradient: Float = 1e15
        /// The largest mean token loss a record may carry.
        public static let maxTokenLoss = 1e6

        public init(backupAfterMs: Millis, workTimeoutMs: Millis, maxFailures: Int = 3, maxLabelsPerSample: Int64) {
            self.backupAfterMs = backupAfterMs
            self.workTimeoutMs = workTimeoutMs
            self.maxFailures = maxFailures
            self.maxLabelsPerSample = maxLabelsPerSample
        }
    }

    struct Assignment: Sendable, Equatable {
        var microBatch: UInt32
        var since: Millis
    }

    /// What the units are: a training step's micro-batches, or an evaluation's units of held-out rows.
    public enum Task: Sendable, Equatable {
        case training(epoch: UInt64, dropout: Bool)
        /// `maxNewTokens` 0 scores; otherwise it captions (see ``EvalWork``).
        case evaluation(dataset: String, maxNewTokens: UInt32, eos: Int32)
    }

    /// A unit's accepted result.
    public enum Outcome: Sendable, Equatable {
        case gradients(WorkResult)
        case evaluation(EvalResult)
    }

    public let jobID: UInt64
    /// The envelope step: the training step, or ``evaluationStep(_:)`` of it for an evaluation.
    public let step: UInt64
    public let task: Task
    public let policy: Policy
    /// Sample indices of each unit (micro-batch), by index.
    public let microBatches: [[Int64]]
    private let params: TensorSet
    /// The language model's vocabulary (a generated token must be below it).
    public let vocabularySize: Int

    private var workers: [WorkerID] = []
    private var haveParams: Set<WorkerID> = []
    private var queue: [UInt32]
    private var outstanding: [WorkerID: Assignment] = [:]
    private var accepted: [UInt32: Outcome] = [:]
    /// How long the slowest accepted copy of this step was out (0 before the first).
    private var slowestAcceptedMs: Millis = 0
    private var failures: [UInt32: [String]] = [:]
    /// Who failed each micro-batch, by ``WorkerID/principal`` (a key that reconnects is still the same).
    private var failedOn: [UInt32: Set<String>] = [:]
    private var announced = false

    /// A training step.
    /// - Parameter params: the parameters this step's gradients are taken at (sent to workers lacking them).
    public init(jobID: UInt64, step: UInt64, epoch: UInt64, microBatches: [[Int64]], dropout: Bool,
                params: TensorSet, policy: Policy) {
        self.init(jobID: jobID, step: step, task: .training(epoch: epoch, dropout: dropout), units: microBatches,
                  params: params, policy: policy, vocabularySize: Int(Int32.max))
    }

    /// Any task; an evaluation's `step` is ``evaluationStep(_:)`` of the steps done.
    public init(jobID: UInt64, step: UInt64, task: Task, units: [[Int64]], params: TensorSet, policy: Policy,
                vocabularySize: Int) {
        self.jobID = jobID
        self.step = step
        self.task = task
        self.microBatches = units
        self.params = params
        self.policy = policy
        self.vocabularySize = vocabularySize
        self.queue = Array(0..<UInt32(units.count))
    }

    public var isComplete: Bool { accepted.count == microBatches.count }

    /// A training step's accepted results in micro-batch order (all of them once ``isComplete``).
    public var results: [WorkResult] {
        accepted.keys.sorted().compactMap { if case .gradients(let r) = accepted[$0]! { r } else { nil } }
    }

    /// An evaluation's accepted results in unit order.
    public var evaluations: [EvalResult] {
        accepted.keys.sorted().compactMap { if case .evaluation(let r) = accepted[$0]! { r } else { nil } }
    }

    /// Units with an accepted result (progress of a long evaluation).
    public var acceptedUnits: [UInt32] { Array(accepted.keys) }

    /// Micro-batches not yet handed to anyone.
    public var pending: [UInt32] { queue }

    /// The micro-batch a worker is computing, if any.
    public func assignment(of id: WorkerID) -> UInt32? { outstanding[id]?.microBatch }

    /// Starts the step with the live workers; `haveParams` are those that already hold this step's
    /// parameters (for example just welcomed with them).
    public mutating func start(workers: [WorkerID], haveParams: Set<WorkerID>, now: Millis) -> [Directive] {
        self.workers = workers
        self.haveParams = haveParams
        return assignIdle(now: now) + completion()
    }

    /// A worker joined mid-step: it gets the current parameters and work. A worker that joins again
    /// (it restarted) has lost whatever it was computing: that goes back to the queue first.
    public mutating func workerJoined(_ id: WorkerID, haveParams has: Bool = false, now: Millis) -> [Directive] {
        var out: [Directive] = []
        if workers.contains(id) { out = workerGone(id, now: now) }
        workers.append(id)
        if has { haveParams.insert(id) } else { haveParams.remove(id) }
        return out + assignIdle(now: now)
    }

    /// A worker died, left or was evicted: its micro-batch goes back to the queue (unless another copy
    /// is out).
    public mutating func workerGone(_ id: WorkerID, now: Millis) -> [Directive] {
        workers.removeAll { $0 == id }
        haveParams.remove(id)
        guard let a = outstanding.removeValue(forKey: id) else { return [] }
        var out: [Directive] = []
        if requeue(a.microBatch) {
            out.append(.log(.info, "step \(step): micro-batch \(a.microBatch) of \(id) goes back to the queue"))
        }
        return out + assignIdle(now: now) + completion()
    }

    /// A message from a worker that the shell decoded: a Result, an EvalResult or a Failed; the rest is
    /// ignored.
    public mutating func received(_ e: Envelope, from id: WorkerID, now: Millis) -> [Directive] {
        let microBatch: UInt32
        switch e.message {
        case .result(let r): microBatch = r.microBatch
        case .evalResult(let r): microBatch = r.unit
        case .failed(let f): microBatch = f.microBatch
        default: return []
        }
        guard e.jobID == jobID else {
            return [.log(.warning, "dropped a \(e.message.kind) from \(id) for job \(hex(e.jobID)), this job is \(hex(jobID))")]
        }
        guard e.step == step else {
            return [.log(.info, "dropped a \(e.message.kind) from \(id) for step \(e.step) (now at step \(step))")]
        }
        guard let held = outstanding[id], held.microBatch == microBatch else {
            return evict(id, "sent a \(e.message.kind) for micro-batch \(microBatch) of step \(step), which it was not given", now: now)
                + assignIdle(now: now)
        }
        outstanding[id] = nil
        let tookMs = now - held.since
        if case .failed(let f) = e.message {
            return fail(microBatch, on: id, "\(id): \(Sanitized.text(f.reason, limit: 400))", now: now)
        }
        if accepted[microBatch] != nil {
            // The slower copy of a backed-up micro-batch: the same bits, nothing to do.
            return [.log(.debug, "ignored the second copy of micro-batch \(microBatch) from \(id)")] + assignIdle(now: now)
        }
        let samples = microBatches[Int(microBatch)].count
        let outcome: Outcome
        let problem: String?
        switch (e.message, task) {
        case (.result(let r), .training):
            outcome = .gradients(r)
            problem = check(r.gradients, samples: samples)
        case (.evalResult(let r), .evaluation(_, let maxNewTokens, _)):
            outcome = .evaluation(r)
            problem = check(r, samples: samples, maxNewTokens: Int(maxNewTokens))
        default:
            // The unit was taken off the sender above: it goes back to the queue as its failure.
            let reason = "sent a \(e.message.kind) for unit \(microBatch) of a \(taskName)"
            return evict(id, reason, now: now) + fail(microBatch, on: id, "\(id): \(reason)", now: now)
        }
        if let problem {
            var out = evict(id, "sent an invalid result for micro-batch \(microBatch) of step \(step): \(problem)", now: now)
            out += fail(microBatch, on: id, "\(id): invalid result (\(problem))", now: now)
            return out
        }
        accepted[microBatch] = outcome
        slowestAcceptedMs = max(slowestAcceptedMs, tookMs)
        queue.removeAll { $0 == microBatch }
        return assignIdle(now: now) + completion()
    }

    /// Backups of slow micro-batches and the work deadline. Call when ``nextDeadline`` is reached.
    public mutating func tick(now: Millis) -> [Directive] {
        var out: [Directive] = []
        for (id, a) in outstanding.sorted(by: { $0.key < $1.key }) where now - a.since >= policy.workTimeoutMs {
            outstanding[id] = nil
            let why = "no result for micro-batch \(a.microBatch) within cluster.work_timeout_ms (\(policy.workTimeoutMs) ms)"
            out += evict(id, why, now: now)
            out += fail(a.microBatch, on: id, "\(id): \(why)", now: now)
        }
        return out + assignIdle(now: now)
    }

    /// When ``tick(now:)`` next has something to do: the earliest work deadline, or the moment the oldest
    /// single-copy micro-batch may be backed up if a worker is idle and nothing is queued.
    public var nextDeadline: Millis? {
        guard !isComplete, !announced else { return nil }
        var deadlines = outstanding.values.map { $0.since + policy.workTimeoutMs }
        if queue.isEmpty, !idle.isEmpty {
            var copies: [UInt32: Int] = [:]
            for a in outstanding.values { copies[a.microBatch, default: 0] += 1 }
            deadlines += outstanding.values
                .filter { copies[$0.microBatch] == 1 && accepted[$0.microBatch] == nil }
                .map { $0.since + backupAfterMs }
        }
        return deadlines.min()
    }

    /// Why a record cannot be a micro-batch's gradient of this job, or nil if it can.
    public func check(_ g: MicroBatchGradients, samples: Int) -> String? {
        guard g.grads.names == params.names else {
            return "its tensors are \(g.grads.names.prefix(8).map { Sanitized.text($0) }), the parameters are \(params.names)"
        }
        for (mine, theirs) in zip(params, g.grads) where mine.tensor.shape != theirs.tensor.shape {
            return "\(mine.name) has shape \(theirs.tensor.shape), the parameter has \(mine.tensor.shape)"
        }
        let maxLabels = Int64(samples) * policy.maxLabelsPerSample
        guard (0...maxLabels).contains(g.labelCount) else {
            return "label count \(g.labelCount) is outside 0...\(maxLabels) for \(samples) samples"
        }
        guard g.lossSum.isFinite, g.lossSum >= 0, g.lossSum <= Double(g.labelCount) * Policy.maxTokenLoss else {
            return "loss sum \(g.lossSum) is not a finite value in 0...\(Double(g.labelCount) * Policy.maxTokenLoss)"
        }
        for t in g.grads {
            let values = t.tensor.buffer
            // |x| <= bound is false for NaN, so one comparison catches NaN, infinities and huge values.
            if let bad = values.firstIndex(where: { !(abs($0) <= Policy.maxGradient) }) {
                return "\(t.name)[\(bad)] is \(values[bad]), not finite within ±\(Policy.maxGradient)"
            }
        }
        return nil
    }

    /// Why an evaluation result cannot be a unit's, or nil if it can.
    public func check(_ r: EvalResult, samples: Int, maxNewTokens: Int) -> String? {
        let maxLabels = Int64(samples) * policy.maxLabelsPerSample
        guard (0...maxLabels).contains(r.labelCount) else {
            return "label count \(r.labelCount) is outside 0...\(maxLabels) for \(samples) samples"
        }
        guard r.lossSum.isFinite, r.lossSum >= 0, r.lossSum <= Double(r.labelCount) * Policy.maxTokenLoss else {
            return "loss sum \(r.lossSum) is not a finite value in 0...\(Double(r.labelCount) * Policy.maxTokenLoss)"
        }
        guard r.predictions.count == samples, r.predictions.allSatisfy({ $0 >= -1 && $0 < 1024 }) else {
            return "\(r.predictions.count) predictions for \(samples) rows, or a choice out of range"
        }
        guard r.generated.count == (maxNewTokens > 0 ? samples : 0),
              r.generated.allSatisfy({ $0.count <= maxNewTokens && $0.allSatisfy { $0 >= 0 && Int($0) < vocabularySize } }) else {
            return "the captions are not one per row of at most \(maxNewTokens) tokens below the vocabulary size \(vocabularySize)"
        }
        guard r.computeSeconds.isFinite, r.computeSeconds >= 0 else { return "compute seconds \(r.computeSeconds)" }
        return nil
    }

    private var taskName: String {
        if case .training = task { return "training step" }
        return "evaluation"
    }

    // MARK: internals

    private var idle: [WorkerID] { workers.filter { outstanding[$0] == nil } }

    /// Takes a member out: the core removes it and refuses it. A micro-batch it still holds (it sent a
    /// message about another one) goes back to the queue: nobody else would ever compute it.
    private mutating func evict(_ id: WorkerID, _ reason: String, now: Millis) -> [Directive] {
        workers.removeAll { $0 == id }
        haveParams.remove(id)
        var out: [Directive] = [.workerEvicted(id, reason: reason)]
        if let a = outstanding.removeValue(forKey: id), requeue(a.microBatch) {
            out.append(.log(.info, "step \(step): micro-batch \(a.microBatch) of evicted \(id) goes back to the queue"))
            out += assignIdle(now: now)
        }
        return out
    }

    /// A micro-batch failed on `id`: it goes back to the queue for another worker, or the step fails.
    private mutating func fail(_ mb: UInt32, on id: WorkerID, _ reason: String, now: Millis) -> [Directive] {
        failures[mb, default: []].append(reason)
        failedOn[mb, default: []].insert(id.principal)
        let reasons = failures[mb]!
        // Every live worker failed it: with two or more, that is the data or the job, not a node; a lone
        // worker (others may still be joining) retries it, up to maxFailures.
        if !announced, reasons.count >= policy.maxFailures
            || (workers.count >= 2 && Set(workers.map(\.principal)).isSubset(of: failedOn[mb]!)) {
            announced = true
            return [.stepFailed(step: step, microBatch: mb, reasons: reasons)]
        }
        _ = requeue(mb)
        return [.log(.warning, "step \(step): micro-batch \(mb) failed (\(reason)); it goes back to the queue")]
            + assignIdle(now: now)
    }

    /// Puts a micro-batch back in the queue unless it is done or another copy is out.
    private mutating func requeue(_ mb: UInt32) -> Bool {
        guard accepted[mb] == nil, !outstanding.values.contains(where: { $0.microBatch == mb }), !queue.contains(mb) else {
            return false
        }
        let i = queue.firstIndex { $0 > mb } ?? queue.endIndex
        queue.insert(mb, at: i)
        return true
    }

    private mutating func assignIdle(now: Millis) -> [Directive] {
        guard !announced else { return [] }
        var out: [Directive] = []
        for id in idle {
            // A micro-batch that failed on this worker goes to another one when it can; it comes back here
            // only when every live worker has failed it (bounded by maxFailures).
            let live = Set(workers.map(\.principal))
            let pick = queue.firstIndex { !(failedOn[$0]?.contains(id.principal) ?? false) }
                ?? queue.firstIndex { failedOn[$0]?.isSuperset(of: live) ?? false }
            if let i = pick {
                let mb = queue.remove(at: i)
                out += assign(mb, to: id, now: now)
            } else if let mb = slowest(now: now) {
                out.append(.log(.info, "step \(step): backing up slow micro-batch \(mb) on idle \(id)"))
                out += assign(mb, to: id, now: now)
            }
        }
        return out
    }

    /// How long a single copy must be out before an idle worker backs it up: the policy's floor, and twice
    /// the slowest micro-batch accepted in this step.
    var backupAfterMs: Millis { max(policy.backupAfterMs, 2 * slowestAcceptedMs) }

    /// The longest-outstanding micro-batch past the backup threshold that has only one copy out.
    private func slowest(now: Millis) -> UInt32? {
        var copies: [UInt32: Int] = [:]
        for a in outstanding.values { copies[a.microBatch, default: 0] += 1 }
        return outstanding.values
            .filter { copies[$0.microBatch] == 1 && accepted[$0.microBatch] == nil && now - $0.since >= backupAfterMs }
            .min { ($0.since, $0.microBatch) < ($1.since, $1.microBatch) }?
            .microBatch
    }

    private mutating func assign(_ mb: UInt32, to id: WorkerID, now: Millis) -> [Directive] {
        var out: [Directive] = []
        if !haveParams.contains(id) {
            out.append(.send(to: id, Envelope(jobID: jobID, step: step, .params(params))))
            haveParams.insert(id)
        }
        let message: Message
        switch task {
        case .training(let epoch, let dropout):
            message = .work(Work(epoch: epoch, microBatch: mb, samples: microBatches[Int(mb)], dropout: dropout))
        case .evaluation(let dataset, let maxNewTokens, let eos):
            message = .evalWork(EvalWork(unit: mb, dataset: dataset, samples: microBatches[Int(mb)], maxNewTokens: maxNewTokens, eos: eos))
        }
        out.append(.send(to: id, Envelope(jobID: jobID, step: step, message)))
        outstanding[id] = Assignment(microBatch: mb, since: now)
        return out
    }

    private mutating func completion() -> [Directive] {
        guard isComplete, !announced else { return [] }
        announced = true
        switch task {
        case .training:
            return [.log(.debug, "step \(step) complete: \(microBatches.count) micro-batches"),
                    .stepComplete(step: step, results: results)]
        case .evaluation:
            return [.evaluationComplete(step: step, results: evaluations)]
        }
    }
}

func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}
