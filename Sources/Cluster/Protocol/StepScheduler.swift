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
/// - Results for another job or another step are dropped with a log directive (fencing); a result for a
///   micro-batch already accepted is ignored; the first result for each micro-batch wins.
/// - When the queue is empty and a worker is idle while another's micro-batch has been outstanding for
///   `backupAfterMs`, the idle worker computes it too (at most two copies); whichever result arrives
///   first is accepted. Results are bitwise identical whichever worker computed them (DESIGN.md §6).
/// - The step completes (``Directive/stepComplete(step:results:)``, once, with the results in
///   micro-batch order) when every micro-batch has exactly one accepted result.
public struct StepScheduler: Sendable {
    struct Assignment: Sendable, Equatable {
        var microBatch: UInt32
        var since: Millis
    }

    public let jobID: UInt64
    public let step: UInt64
    public let epoch: UInt64
    public let dropout: Bool
    public let backupAfterMs: Millis
    /// Sample indices of each micro-batch, by micro-batch index.
    public let microBatches: [[Int64]]
    private let params: TensorSet

    private var workers: [WorkerID] = []
    private var haveParams: Set<WorkerID> = []
    private var queue: [UInt32]
    private var outstanding: [WorkerID: Assignment] = [:]
    private var accepted: [UInt32: WorkResult] = [:]
    private var announced = false

    /// - Parameters:
    ///   - params: the parameters this step's gradients are taken at (sent to workers lacking them).
    ///   - backupAfterMs: how long a micro-batch may be outstanding before an idle worker backs it up.
    public init(jobID: UInt64, step: UInt64, epoch: UInt64, microBatches: [[Int64]], dropout: Bool,
                params: TensorSet, backupAfterMs: Millis) {
        self.jobID = jobID
        self.step = step
        self.epoch = epoch
        self.microBatches = microBatches
        self.dropout = dropout
        self.params = params
        self.backupAfterMs = backupAfterMs
        self.queue = Array(0..<UInt32(microBatches.count))
    }

    public var isComplete: Bool { accepted.count == microBatches.count }

    /// The accepted results in micro-batch order (all of them once ``isComplete``).
    public var results: [WorkResult] { accepted.keys.sorted().map { accepted[$0]! } }

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

    /// A worker died or left: its micro-batch goes back to the queue (unless another copy is out).
    public mutating func workerGone(_ id: WorkerID, now: Millis) -> [Directive] {
        workers.removeAll { $0 == id }
        haveParams.remove(id)
        guard let a = outstanding.removeValue(forKey: id) else { return [] }
        var out: [Directive] = []
        if accepted[a.microBatch] == nil, !outstanding.values.contains(where: { $0.microBatch == a.microBatch }) {
            insertQueued(a.microBatch)
            out.append(.log(.info, "step \(step): micro-batch \(a.microBatch) of \(id) goes back to the queue"))
        }
        return out + assignIdle(now: now)
    }

    /// A message from a worker that the shell decoded. Only Result matters here; the rest is ignored.
    public mutating func received(_ e: Envelope, from id: WorkerID, now: Millis) -> [Directive] {
        guard case .result(let r) = e.message else { return [] }
        guard e.jobID == jobID else {
            return [.log(.warning, "dropped a result from \(id) for job \(hex(e.jobID)), this job is \(hex(jobID))")]
        }
        guard e.step == step else {
            return [.log(.info, "dropped a result from \(id) for step \(e.step) (now at step \(step))")]
        }
        guard Int(r.microBatch) < microBatches.count else {
            return [.log(.warning, "dropped a result from \(id) for micro-batch \(r.microBatch): step \(step) has \(microBatches.count)")]
        }
        var out: [Directive] = []
        if outstanding[id]?.microBatch == r.microBatch { outstanding[id] = nil }
        if accepted[r.microBatch] != nil {
            out.append(.log(.debug, "ignored a duplicate result for micro-batch \(r.microBatch) from \(id)"))
        } else {
            accepted[r.microBatch] = r
            queue.removeAll { $0 == r.microBatch }
        }
        return out + assignIdle(now: now) + completion()
    }

    /// Backs up slow micro-batches on idle workers. Call when ``nextDeadline`` is reached.
    public mutating func tick(now: Millis) -> [Directive] {
        assignIdle(now: now)
    }

    /// When ``tick(now:)`` next has something to do: the moment the oldest single-copy micro-batch may be
    /// backed up, if a worker is idle and nothing is queued (otherwise the idle worker is already busy).
    public var nextDeadline: Millis? {
        guard queue.isEmpty, !idle.isEmpty, !isComplete else { return nil }
        var copies: [UInt32: Int] = [:]
        for a in outstanding.values { copies[a.microBatch, default: 0] += 1 }
        return outstanding.values
            .filter { copies[$0.microBatch] == 1 && accepted[$0.microBatch] == nil }
            .map { $0.since + backupAfterMs }
            .min()
    }

    // MARK: internals

    private var idle: [WorkerID] { workers.filter { outstanding[$0] == nil } }

    private mutating func assignIdle(now: Millis) -> [Directive] {
        var out: [Directive] = []
        for id in idle {
            if let mb = queue.first {
                queue.removeFirst()
                out += assign(mb, to: id, now: now)
            } else if let mb = slowest(now: now) {
                out.append(.log(.info, "step \(step): backing up slow micro-batch \(mb) on idle \(id)"))
                out += assign(mb, to: id, now: now)
            } else {
                break
            }
        }
        return out
    }

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
        let work = Work(epoch: epoch, microBatch: mb, samples: microBatches[Int(mb)], dropout: dropout)
        out.append(.send(to: id, Envelope(jobID: jobID, step: step, .work(work))))
        outstanding[id] = Assignment(microBatch: mb, since: now)
        return out
    }

    private mutating func insertQueued(_ mb: UInt32) {
        let i = queue.firstIndex { $0 > mb } ?? queue.endIndex
        queue.insert(mb, at: i)
    }

    private mutating func completion() -> [Directive] {
        guard isComplete, !announced else { return [] }
        announced = true
        return [.log(.debug, "step \(step) complete: \(microBatches.count) micro-batches"),
                .stepComplete(step: step, results: results)]
    }
}

func hex(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}
