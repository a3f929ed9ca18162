import Cluster
import Foundation
import Model
import Shard
import Transport

/// Micro-batches computed by `worker` processes over ZeroMQ: a thin shell around the pure
/// ``CoordinatorCore`` (admission, membership, scheduling). It sleeps until a message, a signal or the
/// core's next deadline, feeds the core, and carries out the directives the core returns; the step ends
/// when the core says `.stepComplete`. Nothing polls.
final class DistributedExecutor: StepExecutor {
    enum Event {
        case socket(SocketThread.Event)
        case zap(ZAPHandler.Decision)
        case signal(Int32)
        case localWorkerExited(LocalWorkers.Exit)
    }

    /// How often to say so while no worker is connected.
    static let waitingReminderMs: Millis = 30_000

    let job: JobConfig
    let queue = EventQueue<Event>()
    let context: ZMQContext
    let router: SocketThread
    var zap: ZAPHandler?
    var core: CoordinatorCore
    /// The members, as the socket thread's filter sees them (it drops everyone else's messages but Hello).
    let admitted = AdmittedPeers()
    let limits: WireLimits
    var local: LocalWorkers?
    var lastStepMs: Millis = 0
    private(set) var lastComputeSeconds = 0.0
    /// While no worker is live: when to next say we are waiting.
    var nextReminder: Millis?
    /// The language model's vocabulary (a generated token must be below it).
    let vocabularySize: Int

    /// - Parameter maxLabelsPerSample: label tokens a row can have (the dataset's tokens per row).
    /// - Parameter vocabularySize: the language model's (a generated token must be below it).
    init(job: JobConfig, fingerprint: String, step: Int, params: TensorSet, maxLabelsPerSample: Int, vocabularySize: Int) throws {
        self.job = job
        self.vocabularySize = vocabularySize
        context = try ZMQContext()
        limits = WireLimits.forJob(parameters: params, microBatch: job.data.microBatch)
        var options = SocketOptions()
        options.maxMessageBytes = limits.maxFrameBytes
        options.incomingFilter = { [admitted] identity, userID, frames in
            admitted.accepts(WorkerID(identity ?? [], key: userID), frames: frames)
        }
        if job.security.insecure, !job.security.curve, let (host, _) = JobConfig.parseTCP(job.cluster.bind), !JobConfig.isLoopback(host) {
            Console.say("coordinator: WARNING: \(job.cluster.bind) accepts workers from other hosts without CURVE "
                + "(security.insecure: true): anyone who can reach it can join this job and send it gradients")
        }
        if job.security.curve {
            let pair = try CurveKeyPair(secretKeyFile: job.security.secretKey.path)
            let q = queue
            zap = try ZAPHandler(context: context, allowedDirectory: job.security.allowedWorkers.path) { q.post(.zap($0)) }
            options.curve = .server(pair)
        }
        do {
            router = try SocketThread(name: "coordinator", context: context, type: .router, options: options, .bind(job.cluster.bind))
        } catch {
            throw UserError("cannot listen on cluster.bind \(job.cluster.bind). Is another coordinator running there? "
                + "Pick another port with --set cluster.bind=tcp://HOST:PORT", cause: error)
        }
        let policy = StepScheduler.Policy(backupAfterMs: 1000, workTimeoutMs: Millis(job.cluster.workTimeoutMs),
                                          maxLabelsPerSample: Int64(maxLabelsPerSample))
        core = CoordinatorCore(jobID: job.jobID, computeID: job.computeID, configJSON: job.workerPart.canonicalJSON(),
                               backbone: fingerprint, step: UInt64(step), params: params,
                               heartbeatMs: Millis(job.cluster.heartbeatMs), timeoutMs: Millis(job.cluster.timeoutMs), policy: policy)
        router.forward(into: queue) { .socket($0) }
        let q = queue
        Interruption.observe { q.post(.signal($0)) }
        nextReminder = monotonicMillis() + Self.waitingReminderMs
        Console.say("coordinator: job \(job.jobIDString) listening on \(router.endpoint)"
            + (job.security.curve ? " (CURVE, workers listed in \(job.security.allowedWorkers))" : ""))
        if job.cluster.launcher == .local {
            local = try LocalWorkers(job: job, endpoint: router.endpoint) { q.post(.localWorkerExited($0)) }
        }
    }

    var workersAlive: Int { core.membership.live.count }
    var status: String { "workers \(workersAlive)" + (local.map { "/\($0.count)" } ?? "") }

    /// The step's records. The parameters are sent without a copy: `TrainState` never changes a set once
    /// made, it makes the next step's.
    func gradients(step: Int, epoch: Int, microBatches: [[Int]], params: TensorSet) throws -> [MicroBatchGradients] {
        let start = monotonicMillis()
        let first = core.beginStep(UInt64(step), epoch: UInt64(epoch), microBatches: microBatches.map { $0.map(Int64.init) },
                                   dropout: true, params: params, backupAfterMs: max(1000, 2 * lastStepMs), now: start)
        let results = try run(first, what: "step \(step)") { d -> [WorkResult]? in
            if case .stepComplete(let done, let results) = d, done == UInt64(step) { return results }
            return nil
        }
        lastStepMs = monotonicMillis() - start
        lastComputeSeconds = results.reduce(0) { $0 + $1.computeSeconds }
        return results.map(\.gradients)
    }

    /// The evaluation's units on the workers, scheduled like a step's micro-batches (a unit that fails
    /// or whose worker dies goes to another; a result is range-checked before it is taken).
    func evaluate(after steps: Int, dataset: DatasetFile, units: [[Int]], params: TensorSet, maxNewTokens: Int,
                  eos: Int32?, progress: (Int) -> Void) throws -> [EvalResult] {
        let fence = evaluationStep(UInt64(steps))
        let first = core.beginEvaluation(after: UInt64(steps), dataset: dataset.path, units: units.map { $0.map(Int64.init) },
                                         maxNewTokens: UInt32(clamping: maxNewTokens), eos: eos ?? -1, params: params,
                                         vocabularySize: vocabularySize, now: monotonicMillis())
        var reported = 0
        defer { if reported > 0 { progress(units.reduce(0) { $0 + $1.count }) } }
        return try run(first, what: "evaluation after step \(steps)", progress: {
            let done = self.core.scheduler?.acceptedUnits.reduce(0) { $0 + units[Int($1)].count } ?? 0
            if done != reported {
                reported = done
                progress(done)
            }
        }) { d -> [EvalResult]? in
            if case .evaluationComplete(let done, let results) = d, done == fence { return results }
            return nil
        }
    }

    /// Feeds the core events until a directive gives `finished` its answer: sleeps until a message, a
    /// signal, the core's next deadline or the waiting reminder.
    private func run<T>(_ first: [Directive], what: String, progress: () -> Void = {},
                        finished: (Directive) -> T?) throws -> T {
        var directives = first
        while true {
            for d in directives {
                if let answer = finished(d) {
                    try carryOut(directives)
                    return answer
                }
            }
            try carryOut(directives)
            progress()
            directives = []
            let deadline = [core.nextDeadline, nextReminder].compactMap { $0 }.min()
            for event in queue.wait(until: deadline) { directives += try handle(event) }
            let now = monotonicMillis()
            if let due = core.nextDeadline, now >= due { directives += core.tick(now: now) }
            if let due = nextReminder, now >= due {
                Console.say("coordinator: \(what): no worker is connected; waiting for workers to join \(router.endpoint)"
                    + (job.cluster.launcher == .manual ? " (start them with `worker --join \(router.endpoint)`)" : ""))
                nextReminder = now + Self.waitingReminderMs
            }
        }
    }

    private func handle(_ event: Event) throws -> [Directive] {
        switch event {
        case .socket(.message(let identity, let userID, let frames)):
            let id = WorkerID(identity ?? [], key: userID)
            do {
                // The header alone first: a peer that has not joined gets nothing past it decoded.
                guard let first = frames.first, core.admits(id, kind: try WireCodec.header(first).kind) else {
                    return [.log(.debug, "ignored a message from \(id), which has not joined")]
                }
                return core.received(try WireCodec.decode(frames, limits: limits), from: id, now: monotonicMillis())
            } catch let e as WireError {
                return core.undecodable(e, from: id, now: monotonicMillis())
            } catch {
                return [.log(.warning, "dropped a message from \(id): \(error)")]
            }
        case .socket(.sendFailed(let identity, let error)):
            guard let id = core.membership.live.first(where: { $0.identity == identity ?? [] }) else {
                return [.log(.debug, "send to \(WorkerID(identity ?? [])) failed: \(error)")]
            }
            return [.log(.info, "send to \(id) failed (\(error)): it is gone")] + core.sendFailed(to: id, now: monotonicMillis())
        case .socket(.dropped(let count)):
            return [.log(.warning, "dropped \(count) incoming messages: more arrived than the coordinator could queue")]
        case .socket(.failed(let error)):
            return [.log(.warning, "the coordinator socket failed: \(error)")]
        case .zap(let d):
            if d.admitted { return [.log(.debug, "CURVE admitted \(d.address) (\(d.keyFile ?? d.publicKey))")] }
            return [.log(.warning, "refused a worker from \(d.address): its \(d.mechanism) key \(d.publicKey.isEmpty ? "(none)" : d.publicKey) is not in \(job.security.allowedWorkers)")]
        case .signal(let sig):
            throw Interrupted(signal: sig)
        case .localWorkerExited(let exit):
            try local?.exited(exit)
            return []
        }
    }

    /// Carries out the core's directives (sends, logs, membership news); a step or evaluation that cannot
    /// complete ends the job.
    private func carryOut(_ directives: [Directive]) throws {
        for d in directives {
            switch d {
            case .send(let to, let envelope):
                router.send(envelope, to: to.identity)
            case .log(let level, let line):
                if level != .debug { Console.say("coordinator: \(line)") }
            case .workerJoined:
                nextReminder = nil
            case .workerDied, .workerLeft:
                if workersAlive == 0 { nextReminder = monotonicMillis() + Self.waitingReminderMs }
            case .workerEvicted(let id, let reason):
                Console.say("coordinator: evicted \(id): \(reason)")
                if workersAlive == 0 { nextReminder = monotonicMillis() + Self.waitingReminderMs }
            case .stepComplete, .evaluationComplete:
                break
            case .stepFailed(let failed, let unit, let reasons):
                let what = evaluatedStep(failed).map { "the evaluation after step \($0): unit \(unit)" }
                    ?? "step \(failed): micro-batch \(unit)"
                throw UserError("\(what) failed \(reasons.count) time(s), so the job cannot go on:\n  "
                    + reasons.joined(separator: "\n  ") + "\nFix the cause (the data row, the disk, the settings) and continue with --resume latest")
            }
        }
        admitted.set(core.membership.live)
    }

    func shutdown() {
        for id in core.membership.live { router.send(Envelope(jobID: job.jobID, step: core.step, .stop), to: id.identity) }
        local?.stop()
        router.stop()
        zap?.stop()
    }
}

/// The members' identities, readable from the socket thread: its filter keeps a message only if it comes
/// from a member, or is a small Hello (which anyone may send).
final class AdmittedPeers: @unchecked Sendable {
    private let lock = NSLock()
    private var members: Set<WorkerID> = []
    /// A Hello is two short frames (header, name and fingerprint).
    static let maxHelloBytes = 64 << 10

    func set(_ live: [WorkerID]) {
        lock.lock()
        members = Set(live)
        lock.unlock()
    }

    func accepts(_ id: WorkerID, frames: [ZMQMessage]) -> Bool {
        lock.lock()
        let member = members.contains(id)
        lock.unlock()
        if member { return true }
        guard frames.count == 2, frames.reduce(0, { $0 + $1.count }) <= Self.maxHelloBytes,
              let kind = try? WireCodec.header(frames[0]).kind else { return false }
        return kind == MessageKind.hello.rawValue
    }
}
