import Cluster
import Foundation
import Model

/// Micro-batches computed by `worker` processes over ZeroMQ: a thin shell that carries out the
/// directives of the pure `CoordinatorCore` (admission, membership, scheduling), and, for the `local`
/// launcher, starts and stops the worker processes.
final class DistributedExecutor: StepExecutor {
    enum Event {
        case socket(SocketThread.Event)
        case zap(ZAPHandler.Decision)
    }

    let job: JobConfig
    let queue = EventQueue<Event>()
    let context: ZMQContext
    let router: SocketThread
    var zap: ZAPHandler?
    var core: CoordinatorCore
    var local: [Process] = []
    var lastStepMs: Millis = 0
    var lastComputeSeconds = 0.0
    var waitingSince: Millis?

    init(job: JobConfig, backbone: String, step: Int, params: ParameterSet) throws {
        self.job = job
        context = try ZMQContext()
        var options = SocketOptions()
        if job.security.curve {
            let pair = try CurveKeyPair(secretKeyFile: job.security.secretKey)
            let q = queue
            zap = try ZAPHandler(context: context, allowedDirectory: job.security.allowedWorkers) { q.post(.zap($0)) }
            options.curve = .server(pair)
        }
        do {
            router = try SocketThread(name: "coordinator", context: context, type: .router, options: options, .bind(job.cluster.bind))
        } catch {
            throw UserError("cannot listen on cluster.bind \(job.cluster.bind): \(error). Is another coordinator running there? Pick another port with --set cluster.bind=tcp://HOST:PORT")
        }
        core = CoordinatorCore(jobID: job.jobID, configJSON: job.canonicalJSON(), backbone: backbone, step: UInt64(step),
                               params: params.pairs.map { NamedTensor($0.0, $0.1.copy()) },
                               heartbeatMs: Millis(job.cluster.heartbeatMs), timeoutMs: Millis(job.cluster.timeoutMs))
        router.forward(into: queue) { .socket($0) }
        Console.say("coordinator: job \(job.jobIDString) listening on \(router.endpoint)"
            + (job.security.curve ? " (CURVE, workers listed in \(job.security.allowedWorkers))" : ""))
        if job.cluster.launcher == "local" { try startLocalWorkers() }
    }

    var workersAlive: Int { core.membership.live.count }
    var status: String { "workers \(workersAlive)" + (job.cluster.launcher == "local" ? "/\(job.cluster.workers)" : "") }

    func contributions(step: Int, epoch: Int, microBatches: [[Int]], params: ParameterSet) throws -> [GradientContribution] {
        let start = monotonicMillis()
        // Fresh tensors: they are sent without copies while the optimizer updates `params` in place.
        let fresh = params.pairs.map { NamedTensor($0.0, $0.1.copy()) }
        var directives = core.beginStep(UInt64(step), epoch: UInt64(epoch), microBatches: microBatches.map { $0.map(Int64.init) },
                                        dropout: true, params: fresh, backupAfterMs: max(1000, 2 * lastStepMs), now: start)
        while true {
            try carryOut(directives)
            if let s = core.scheduler, s.isComplete {
                lastStepMs = monotonicMillis() - start
                lastComputeSeconds = s.results.reduce(0) { $0 + $1.computeSeconds }
                return s.results.map(GradientContribution.init)
            }
            try checkLocalWorkers()
            if let sig = Interruption.signal { throw Interrupted(signal: sig) }
            directives = []
            for event in queue.wait(timeoutMs: Int64(job.cluster.heartbeatMs) / 2) { directives += handle(event) }
            let now = monotonicMillis()
            directives += core.tick(now: now)
            if workersAlive == 0 {
                if let since = waitingSince, now - since > 10_000 {
                    Console.progress("step \(step): waiting for workers to join \(router.endpoint) ...")
                } else if waitingSince == nil { waitingSince = now }
            } else { waitingSince = nil }
        }
    }

    private func handle(_ event: Event) -> [Directive] {
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
        }
    }

    private func carryOut(_ directives: [Directive]) throws {
        for d in directives {
            switch d {
            case .send(let to, let envelope): router.send(envelope, to: to.identity)
            case .log(let level, let line): if level != .debug { Console.say("coordinator: \(line)") }
            case .workerJoined, .workerDied, .workerLeft, .stepComplete: break   // Membership logs these
            }
        }
    }

    // MARK: the local launcher

    static func workerExecutable() throws -> String {
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let path = me.deletingLastPathComponent().appendingPathComponent("worker").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw UserError("cluster.launcher local needs the worker executable next to the coordinator (\(path)); build both with `swift build -c release`")
        }
        return path
    }

    /// The address local workers connect to (a wildcard bind is reached on loopback).
    var localEndpoint: String {
        let e = router.endpoint
        return e.replacingOccurrences(of: "tcp://0.0.0.0:", with: "tcp://127.0.0.1:").replacingOccurrences(of: "tcp://*:", with: "tcp://127.0.0.1:")
    }

    private func startLocalWorkers() throws {
        let exe = try Self.workerExecutable()
        for i in 0..<job.cluster.workers {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            var args = ["--join", localEndpoint, "--name", "local-\(i)", "--heartbeat-ms", "\(job.cluster.heartbeatMs)",
                        "--timeout-ms", "\(job.cluster.timeoutMs)"]
            if job.security.curve {
                // The layout `coordinator keys --out DIR` writes: DIR/coordinator.key, DIR/worker-N.key_secret.
                let keys = (job.security.secretKey as NSString).deletingLastPathComponent as NSString
                args += ["--curve-secret", keys.appendingPathComponent("worker-\(i + 1).key_secret"),
                         "--server-key", keys.appendingPathComponent("coordinator.key")]
            }
            p.arguments = args
            let logPath = (job.checkpoint.dir as NSString).appendingPathComponent("worker-\(i).log")
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            p.standardOutput = log
            p.standardError = log
            try p.run()
            local.append(p)
        }
        Console.say("coordinator: started \(local.count) local workers (logs: \(job.checkpoint.dir)/worker-N.log)")
    }

    private func checkLocalWorkers() throws {
        for (i, p) in local.enumerated() where !p.isRunning && p.terminationStatus != 0 && p.terminationReason == .exit {
            throw UserError("local worker \(i) exited with status \(p.terminationStatus); see \(job.checkpoint.dir)/worker-\(i).log")
        }
    }

    func shutdown() {
        for id in core.membership.live { router.send(Envelope(jobID: job.jobID, step: core.step, .stop), to: id.identity) }
        let deadline = Date().addingTimeInterval(2)
        while local.contains(where: \.isRunning) && Date() < deadline { usleep(20_000) }
        for p in local where p.isRunning { p.terminate() }
        router.stop()
        zap?.stop()
    }
}
