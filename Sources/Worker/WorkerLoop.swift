import Cluster
import Foundation
import Model
import Shard
import Training
import Transport

/// The worker's shell: one thread runs the connection state machine, sleeping until a socket event, a
/// finished micro-batch, a signal or the machine's next deadline; a compute thread runs the micro-batches
/// in the order they came, so heartbeats go on during long ones.
final class WorkerLoop {
    enum Event {
        case socket(SocketThread.Event)
        /// A micro-batch or evaluation unit finished (or failed) in joined session `session`; on success,
        /// the Result or EvalResult to send.
        case computed(session: Int, step: UInt64, jobID: UInt64, microBatch: UInt32, result: Result<Message, Error>)
        case signal(Int32)
    }

    let name: String
    let endpoint: String
    let curve: CurveRole?
    let overrides: [ConfigOverride]
    var engine: TrainingEngine?
    let heartbeatMs: Int64, timeoutMs: Int64
    let queue = EventQueue<Event>()
    let compute = DispatchQueue(label: "worker-compute")
    let context: ZMQContext
    var socket: SocketThread?
    var conn: WorkerConnection
    /// The parameters of `paramsStep`, as last sent by the coordinator.
    var params: TensorSet?
    var paramsStep: UInt64 = .max
    /// Micro-batches handed to the compute thread and not finished.
    var inFlight = 0
    /// Counts Welcomes: a result computed before the latest one is for a coordinator that has forgotten
    /// the assignment (it rejoined, or the coordinator restarted), so it is dropped rather than sent.
    var session = 0
    /// Set by SIGTERM/SIGINT: finish the micro-batch in hand, hand back any others, say Bye.
    var leaving = false
    var declined: [UInt32] = []
    /// Evaluation datasets by path (the compute thread's).
    private var evalSets: [String: DatasetFile] = [:]
    var computed = 0

    init(name: String, endpoint: String, curve: CurveRole?, overrides: [ConfigOverride], engine: TrainingEngine?,
         heartbeatMs: Int64, timeoutMs: Int64) throws {
        self.name = name
        self.endpoint = endpoint
        self.curve = curve
        self.overrides = overrides
        self.engine = engine
        self.heartbeatMs = heartbeatMs
        self.timeoutMs = timeoutMs
        context = try ZMQContext()
        conn = WorkerLoop.connection(name: name, engine: engine, heartbeatMs: heartbeatMs, timeoutMs: timeoutMs)
    }

    /// The connection, saying Hello with what `engine` holds (a probe without one).
    static func connection(name: String, engine: TrainingEngine?, heartbeatMs: Int64, timeoutMs: Int64) -> WorkerConnection {
        WorkerConnection(hello: Hello(workerName: name, backbone: engine?.fingerprint ?? "", computeID: engine?.job.computeID ?? 0),
                         heartbeatMs: heartbeatMs, timeoutMs: timeoutMs, backoffBaseMs: 100, backoffCapMs: 5000)
    }

    /// Runs until the job ends (0), the coordinator refuses this worker (2), or a signal asks to leave (0).
    func run() throws -> Int32 {
        Interruption.install()
        Interruption.observe { [queue] sig in queue.post(.signal(sig)) }
        say("joining \(endpoint) as \(name)")
        if let code = try execute(conn.start(now: monotonicMillis())) { return code }
        while true {
            if leaving && inFlight == 0 {
                for case .send(let e) in conn.leave(unfinished: declined) { socket?.send(e) }
                socket?.stop()
                say("left the job; computed \(computed) micro-batches")
                return 0
            }
            for event in queue.wait(until: conn.nextDeadline) {
                switch event {
                case .socket(.message(_, _, let frames)):
                    let envelope: Envelope
                    do { envelope = try WireCodec.decode(frames) } catch {
                        say("dropped a malformed message: \(error)")
                        continue
                    }
                    // Carry out the connection's directives (a Welcome's parameters) before the message
                    // itself: a Work may follow its Welcome in the same batch.
                    if let code = try execute(conn.received(envelope, now: monotonicMillis())) { return code }
                    handle(envelope)
                case .socket(.sendFailed(_, let error)):
                    say("send failed: \(error)")
                case .socket(.failed(let error)):
                    say("socket failed: \(error)")
                case .socket(.dropped(let count)):
                    say("dropped \(count) messages: this worker fell behind its socket")
                case .computed(let session, let step, let jobID, let microBatch, let result):
                    inFlight -= 1
                    guard session == self.session else {
                        say("dropped \(Self.unit(microBatch, step: step)): it was assigned before this worker rejoined")
                        continue
                    }
                    switch result {
                    case .success(let message):
                        computed += 1
                        socket?.send(Envelope(jobID: jobID, step: step, message))
                    case .failure(let error):
                        // The coordinator gives it to another worker, or ends the job with this reason.
                        say("\(Self.unit(microBatch, step: step)) failed: \(error)")
                        fail(microBatch, step: step, jobID: jobID, "\(error)")
                    }
                case .signal(let sig):
                    say("signal \(sig): finishing the current micro-batch, then leaving")
                    leaving = true
                }
            }
            let now = monotonicMillis()
            if let due = conn.nextDeadline, now >= due, let code = try execute(conn.tick(now: now)) { return code }
        }
    }

    /// Carries out the connection's directives; returns an exit code when the worker must stop.
    private func execute(_ directives: [WorkerConnection.Directive]) throws -> Int32? {
        for d in directives {
            switch d {
            case .connect:
                socket?.stop()
                var o = SocketOptions()
                o.routingID = Array(name.utf8)
                o.curve = curve
                socket = try SocketThread(name: name, context: context, type: .dealer, options: o, .connect(endpoint))
                socket!.forward(into: queue) { .socket($0) }
            case .disconnect:
                socket?.stop()
                socket = nil
            case .send(let e):
                socket?.send(e)
            case .joined(_, let step, let welcome):
                try joined(step: step, welcome)
            case .log(let line):
                say(line)
            case .stop(let reason):
                say("\(reason); computed \(computed) micro-batches")
                socket?.stop()
                if case .refused = reason { return 2 }
                return 0
            }
        }
        return nil
    }

    /// Admitted (or, for a probe, told the job): load what the job needs, take the parameters.
    private func joined(step: UInt64, _ welcome: Welcome) throws {
        let job = try JobConfig.parse(yaml: welcome.configJSON, source: "the coordinator's job",
                                      baseDirectory: FileManager.default.currentDirectoryPath, overrides: overrides)
        if engine == nil || engine!.job.workerPart != job.workerPart {
            say("loading the backbone of the job (\(job.model.vision), \(job.model.language))")
            engine = try TrainingEngine(job: job)
        }
        if welcome.params.isEmpty {
            // The answer to a probe: say Hello again, now with the fingerprint of what we hold.
            conn = Self.connection(name: name, engine: engine, heartbeatMs: heartbeatMs, timeoutMs: timeoutMs)
            let again = conn.start(now: monotonicMillis())
            for d in again {
                if case .connect = d { continue }   // keep the socket: the coordinator knows this identity
                if case .send(let e) = d { socket?.send(e) }
            }
            return
        }
        session += 1
        params = try engine!.fuser.parameters(from: welcome.params, what: "the coordinator's parameters")
        paramsStep = step
        say("joined at " + (evaluatedStep(step).map { "the evaluation after step \($0)" } ?? "step \(step)"))
    }

    private func handle(_ e: Envelope) {
        switch e.message {
        case .params(let p):
            guard let engine else { return }
            do {
                params = try engine.fuser.parameters(from: p, what: "the coordinator's parameters")
                paramsStep = e.step
            } catch { say("bad parameters for step \(e.step): \(error)") }
        case .work(let w):
            start(w.microBatch, of: e) { engine, params in
                let start = monotonicMillis()
                let g = try engine.gradients(indices: w.samples.map(Int.init), params: params, step: Int(e.step), dropout: w.dropout)
                return .result(WorkResult(microBatch: w.microBatch, gradients: g, computeSeconds: Double(monotonicMillis() - start) / 1000))
            }
        case .evalWork(let w):
            start(w.unit, of: e) { [weak self] engine, params in
                let dataset = try self?.evalDataset(w.dataset, engine: engine) ?? engine.open(w.dataset)
                let r = try engine.evaluate(unit: w.unit, dataset, indices: w.samples.map(Int.init), params: params,
                                            maxNewTokens: Int(w.maxNewTokens), eos: w.eos < 0 ? nil : w.eos)
                return .evalResult(r)
            }
        default:
            break
        }
    }

    /// Hands unit `unit` of envelope `e` (a micro-batch, or an evaluation unit) to the compute thread at
    /// the parameters of `e`'s step, or says why it cannot be computed here.
    private func start(_ unit: UInt32, of e: Envelope, _ work: @escaping (TrainingEngine, TensorSet) throws -> Message) {
        if leaving {
            declined.append(unit)
            return
        }
        guard let engine, let params, paramsStep == e.step else {
            fail(unit, step: e.step, jobID: e.jobID,
                 "this worker holds the parameters of step \(paramsStep == .max ? "none" : "\(paramsStep)"), not of step \(e.step)")
            return
        }
        inFlight += 1
        let step = e.step, job = e.jobID, session = session
        compute.async { [queue] in
            queue.post(.computed(session: session, step: step, jobID: job, microBatch: unit, result: Result { try work(engine, params) }))
        }
    }

    /// An evaluation dataset, opened (and checked against the backbones) once per path. Called on the
    /// compute thread only.
    private func evalDataset(_ path: String, engine: TrainingEngine) throws -> DatasetFile {
        if let d = evalSets[path] { return d }
        let d = try engine.open(path)
        evalSets[path] = d
        return d
    }

    /// "micro-batch 3 of step 7" or "unit 3 of the evaluation after step 7".
    static func unit(_ index: UInt32, step: UInt64) -> String {
        evaluatedStep(step).map { "unit \(index) of the evaluation after step \($0)" } ?? "micro-batch \(index) of step \(step)"
    }

    /// Tells the coordinator this micro-batch cannot be computed here, and why (bounded).
    private func fail(_ microBatch: UInt32, step: UInt64, jobID: UInt64, _ reason: String) {
        socket?.send(Envelope(jobID: jobID, step: step, .failed(Failed(microBatch: microBatch, reason: String(reason.prefix(2000))))))
    }
}
