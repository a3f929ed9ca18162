import Cluster
import Foundation
import Model
import TestSupport
import Testing
import Transport

struct TimedOut: Error { var step: UInt64 }

/// The state machines driven by thin socket shells over 127.0.0.1, with a worker that dies mid-step:
/// the parameters after every step must be bitwise identical to a run with one healthy worker.
@Suite("Coordinator and workers over loopback", .serialized)
struct ClusterLoopbackTests {
    static let heartbeatMs: Millis = 50
    static let timeoutMs: Millis = 500
    static let steps = 3

    static func now() -> Millis { Millis(DispatchTime.now().uptimeNanoseconds / 1_000_000) }

    static func microBatches(step: UInt64) -> [[Int64]] {
        (0..<4).map { mb in [Int64(step) * 8 + Int64(mb) * 2, Int64(step) * 8 + Int64(mb) * 2 + 1] }
    }

    /// A stand-in for the model: deterministic in (samples, params), magnitudes over many binades so
    /// that float addition in arrival order would not be reproducible.
    static func gradient(samples: [Int64], params: Tensor) -> WorkResult {
        let g = Tensor(zeros: params.shape)
        for i in 0..<g.count {
            var acc: Float = 0
            for s in samples { acc += Float(sin(Double(s * Int64(i + 1)) + Double(params.data[i]))) }
            g.data[i] = acc * Float(sign: .plus, exponent: (i % 7) * 5 - 15, significand: 1)
        }
        return WorkResult(microBatch: 0, gradients: MicroBatchGradients(
            lossSum: Double(samples.reduce(0, +)) / 3, labelCount: Int64(samples.count), grads: [NamedTensor("w", g)]))
    }

    /// Runs one worker until the coordinator stops it; with `dieOnWork` it vanishes (closes its socket
    /// without Bye) when handed its first micro-batch.
    static func worker(_ name: String, endpoint: String, dieOnWork: Bool) async throws {
        let hello = Hello(workerName: name, backbone: "fp", computeID: 1)
        var conn = WorkerConnection(hello: hello, heartbeatMs: heartbeatMs, timeoutMs: timeoutMs, backoffBaseMs: 20, backoffCapMs: 200)
        var socket: SocketThread?
        var inbox: Inbox?
        var params: Tensor?
        var pending = conn.start(now: now())
        let ctx = try ZMQContext()
        while true {
            for d in pending {
                switch d {
                case .connect:
                    socket?.stop()
                    var o = SocketOptions()
                    o.routingID = Array(name.utf8)
                    socket = try SocketThread(name: name, context: ctx, type: .dealer, options: o, .connect(endpoint))
                    inbox = Inbox(socket!)
                case .disconnect:
                    socket?.stop()
                    socket = nil
                case .send(let e):
                    socket?.send(e)
                case .joined(_, _, let welcome):
                    params = welcome.params.first?.tensor
                case .stop:
                    socket?.stop()
                    return
                case .log:
                    break
                }
            }
            pending = []
            for event in inbox?.drain() ?? [] {
                guard case .message(_, _, let frames) = event, let e = try? WireCodec.decode(frames) else { continue }
                let directives = conn.received(e, now: now())
                // Take a Welcome's parameters now: a Work may follow it in the same batch of events.
                for case .joined(_, _, let welcome) in directives { params = welcome.params.first?.tensor }
                pending += directives
                switch e.message {
                case .params(let p):
                    params = p.first?.tensor
                case .work(let w):
                    if dieOnWork {
                        socket?.stop()
                        return
                    }
                    guard let params else { continue }   // the scheduler backs it up elsewhere
                    var r = gradient(samples: w.samples, params: params)
                    r.microBatch = w.microBatch
                    pending.append(.send(Envelope(jobID: e.jobID, step: e.step, .result(r))))
                default:
                    break
                }
            }
            pending += conn.tick(now: now())
            try await Task.sleep(nanoseconds: 2_000_000)
        }
    }

    /// Runs the coordinator for `steps` SGD steps once `workers` have joined; returns the parameter
    /// bits after each step and the micro-batches that went back to the queue.
    static let initialParams: [Float] = (0..<12).map { Float($0) / 7 }

    /// With `from`, resumes as a restarted coordinator would from a checkpoint: that step and those
    /// parameters. Runs up to step `until` (exclusive) and sends Stop only when `stopWorkers`.
    static func coordinator(router: SocketThread, workers: Int, from start: (step: UInt64, params: [Float]) = (0, initialParams),
                            until: Int = steps, stopWorkers: Bool = true) async throws -> (history: [[UInt32]], deaths: Int) {
        let inbox = Inbox(router)
        var params = Tensor(shape: [12], values: start.params)
        var core = CoordinatorCore(jobID: 3, computeID: 1, configJSON: "{}", backbone: "fp", step: start.step,
                                   params: [NamedTensor("w", params)], heartbeatMs: heartbeatMs, timeoutMs: timeoutMs,
                                   policy: StepScheduler.Policy(backupAfterMs: 60_000, workTimeoutMs: 60_000, maxLabelsPerSample: 1))
        var history: [[UInt32]] = []
        var deaths = 0
        var started = false
        let deadline = now() + 30_000
        while Int(start.step) + history.count < until {
            guard now() < deadline else { throw TimedOut(step: core.step) }
            var queue: [Directive] = []
            for event in inbox.drain() {
                guard case .message(let id?, _, let frames) = event else { continue }
                do {
                    queue += core.received(try WireCodec.decode(frames), from: WorkerID(id), now: now())
                } catch let e as WireError {
                    queue += core.undecodable(e, from: WorkerID(id), now: now())
                }
            }
            queue += core.tick(now: now())
            if !started, core.membership.live.count >= workers {
                started = true
                queue += core.beginStep(start.step, epoch: 0, microBatches: microBatches(step: start.step), dropout: true,
                                        params: [NamedTensor("w", params)], backupAfterMs: 60_000, now: now())
            }
            while !queue.isEmpty {
                let d = queue.removeFirst()
                switch d {
                case .send(let to, let e):
                    router.send(e, to: to.identity)
                case .workerDied:
                    deaths += 1
                case .stepComplete(let s, let results):
                    // Shuffled: the combination must not depend on the order results are handed over in.
                    let sum = try ExactSum.combine(results.shuffled().map(\.gradients))
                    let next = params.copy()  // the old tensor may still be in flight to a worker
                    for i in 0..<next.count { next.data[i] -= 0.01 * sum.grads[0].tensor.data[i] / Float(sum.labelCount) }
                    params = next
                    history.append(params.array.map(\.bitPattern))
                    if Int(s) + 1 < until {
                        queue += core.beginStep(s + 1, epoch: 0, microBatches: microBatches(step: s + 1), dropout: true,
                                                params: [NamedTensor("w", params)], backupAfterMs: 60_000, now: now())
                    }
                default:
                    break
                }
            }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
        if stopWorkers {
            for id in core.membership.live { router.send(Envelope(jobID: 3, step: core.step, .stop), to: id.identity) }
        }
        return (history, deaths)
    }

    static func run(workers: [(String, Bool)]) async throws -> (history: [[UInt32]], deaths: Int) {
        let ctx = try ZMQContext()
        let router = try SocketThread(name: "coordinator", context: ctx, type: .router, .bind("tcp://127.0.0.1:*"))
        defer { router.stop() }
        let endpoint = router.endpoint
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for (name, dies) in workers {
                group.addTask { try await worker(name, endpoint: endpoint, dieOnWork: dies) }
            }
            let result = try await coordinator(router: router, workers: workers.count)
            // Healthy workers exit on Stop; give them a moment, then stop waiting.
            try await Task.sleep(nanoseconds: 200_000_000)
            group.cancelAll()
            return result
        }
    }

    @Test("workers rejoin a coordinator that was killed and resumed; the parameters are bitwise unchanged")
    func coordinatorRestart() async throws {
        let reference = try await Self.run(workers: [("r1", false), ("r2", false)])
        let ctx = try ZMQContext()
        var first: SocketThread? = try SocketThread(name: "coordinator-1", context: ctx, type: .router, .bind("tcp://127.0.0.1:*"))
        let endpoint = first!.endpoint
        let history = try await withThrowingTaskGroup(of: Void.self) { group in
            for name in ["k1", "k2"] {
                group.addTask { try await Self.worker(name, endpoint: endpoint, dieOnWork: false) }
            }
            // Step 0, then the coordinator vanishes without a word (its socket closes) ...
            let before = try await Self.coordinator(router: first!, workers: 2, until: 1, stopWorkers: false)
            first!.stop()
            first = nil
            // ... and a new one resumes from the "checkpoint" on the same endpoint.
            // zmq_close hands the listener to the context's I/O thread, which closes it a moment later:
            // binding the same port at once fails now and then with EADDRINUSE, so retry briefly.
            var bound: SocketThread?
            for attempt in 1...50 where bound == nil {
                do { bound = try SocketThread(name: "coordinator-2", context: ctx, type: .router, .bind(endpoint)) } catch {
                    if attempt == 50 { throw error }
                    try await Task.sleep(nanoseconds: 20_000_000)
                }
            }
            let second = bound!
            defer { second.stop() }
            let resumed = try await Self.coordinator(router: second, workers: 2,
                                                     from: (1, before.history[0].map(Float.init(bitPattern:))))
            try await Task.sleep(nanoseconds: 200_000_000)
            group.cancelAll()
            return before.history + resumed.history
        }
        #expect(history.count == Self.steps)
        #expect(history == reference.history)
    }

    @Test("a worker dying mid-step does not change the parameters by a single bit")
    func deathIsInvisible() async throws {
        let single = try await Self.run(workers: [("solo", false)])
        let trio = try await Self.run(workers: [("w1", false), ("w2", false), ("doomed", true)])
        #expect(single.history.count == Self.steps)
        #expect(single.deaths == 0)
        #expect(trio.deaths == 1)
        #expect(trio.history == single.history)
    }
}
