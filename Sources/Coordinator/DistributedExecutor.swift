import Cluster
import Foundation
import Model
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
    static let waitingReminderMs: Millis = 10_000

    let job: JobConfig
    let queue = EventQueue<Event>()
    let context: ZMQContext
    let router: SocketThread
    var zap: ZAPHandler?
    var core: CoordinatorCore
    var local: LocalWorkers?
    var lastStepMs: Millis = 0
    private(set) var lastComputeSeconds = 0.0
    /// While no worker is live: when to next say we are waiting.
    var nextReminder: Millis?

    init(job: JobConfig, fingerprint: String, step: Int, params: TensorSet) throws {
        self.job = job
        context = try ZMQContext()
        var options = SocketOptions()
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
        core = CoordinatorCore(jobID: job.jobID, configJSON: job.canonicalJSON(), backbone: fingerprint, step: UInt64(step),
                               params: params, heartbeatMs: Millis(job.cluster.heartbeatMs), timeoutMs: Millis(job.cluster.timeoutMs))
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
        var directives = core.beginStep(UInt64(step), epoch: UInt64(epoch), microBatches: microBatches.map { $0.map(Int64.init) },
                                        dropout: true, params: params, backupAfterMs: max(1000, 2 * lastStepMs), now: start)
        while true {
            if let results = try carryOut(directives, step: step) {
                lastStepMs = monotonicMillis() - start
                lastComputeSeconds = results.reduce(0) { $0 + $1.computeSeconds }
                return results.map(\.gradients)
            }
            directives = []
            let deadline = [core.nextDeadline, nextReminder].compactMap { $0 }.min()
            for event in queue.wait(until: deadline) { directives += try handle(event) }
            let now = monotonicMillis()
            if let due = core.nextDeadline, now >= due { directives += core.tick(now: now) }
            if let due = nextReminder, now >= due {
                Console.progress("step \(step): waiting for workers to join \(router.endpoint) ...")
                nextReminder = now + Self.waitingReminderMs
            }
        }
    }

    private func handle(_ event: Event) throws -> [Directive] {
        switch event {
        case .socket(.message(let identity, let frames)):
            let id = WorkerID(identity ?? [])
            do { return core.received(try WireCodec.decode(frames), from: id, now: monotonicMillis()) } catch let e as WireError {
                return core.undecodable(e, from: id)
            } catch {
                return [.log(.warning, "dropped a message from \(id): \(error)")]
            }
        case .socket(.sendFailed(let identity, let error)):
            return [.log(.debug, "send to \(WorkerID(identity ?? [])) failed: \(error)")]
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

    /// Carries out the core's directives; returns the step's results when it is complete.
    private func carryOut(_ directives: [Directive], step: Int) throws -> [WorkResult]? {
        var complete: [WorkResult]?
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
            case .stepComplete(let done, let results):
                if done == UInt64(step) { complete = results }
            }
        }
        return complete
    }

    func shutdown() {
        for id in core.membership.live { router.send(Envelope(jobID: job.jobID, step: core.step, .stop), to: id.identity) }
        local?.stop()
        router.stop()
        zap?.stop()
    }
}
