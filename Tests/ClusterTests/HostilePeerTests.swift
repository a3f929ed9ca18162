import Cluster
import Model
import TestSupport
import Testing

/// DESIGN.md §7's rules for results, failures and admission, on the pure state machines: what a hostile
/// or faulty peer's message does to the step, without sockets.
@Suite("hostile and faulty peers (state machines)")
struct HostilePeerTests {
    let a = WorkerID("a"), b = WorkerID("b"), c = WorkerID("c")
    static let params: TensorSet = [NamedTensor("w", Tensor(shape: [2, 2], values: [1, 2, 3, 4])),
                                    NamedTensor("b", Tensor(shape: [2], values: [0, 0]))]
    static let policy = StepScheduler.Policy(backupAfterMs: 10_000, workTimeoutMs: 1_000, maxLabelsPerSample: 5)

    func scheduler(k: Int = 2) -> StepScheduler {
        StepScheduler(jobID: 7, step: 3, epoch: 0, microBatches: (0..<k).map { [Int64($0 * 2), Int64($0 * 2 + 1)] },
                      dropout: true, params: Self.params, policy: Self.policy)
    }

    /// A record like a worker's: the parameters' names and shapes.
    func record(loss: Double = 2, labels: Int64 = 4, value: Float = 0.5, names: [String] = ["w", "b"],
                shapes: [[Int]] = [[2, 2], [2]]) -> MicroBatchGradients {
        let grads = zip(names, shapes).map { name, shape -> NamedTensor in
            let t = Tensor(zeros: shape)
            t.fill(value)
            return NamedTensor(name, t)
        }
        return MicroBatchGradients(lossSum: loss, labelCount: labels, grads: TensorSet(grads))
    }

    func result(_ mb: UInt32, _ g: MicroBatchGradients) -> Envelope {
        Envelope(jobID: 7, step: 3, .result(WorkResult(microBatch: mb, gradients: g)))
    }

    func evicted(_ d: [Directive]) -> [WorkerID] {
        d.compactMap { if case .workerEvicted(let id, _) = $0 { id } else { nil } }
    }

    func stepFailure(_ d: [Directive]) -> [String]? {
        for x in d { if case .stepFailed(_, _, let reasons) = x { return reasons } }
        return nil
    }

    @Test("a result for a micro-batch the sender was not given is dropped and the sender evicted; nothing is accepted")
    func notTheHolder() {
        var s = scheduler()
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        #expect(s.assignment(of: a) == 0 && s.assignment(of: b) == 1)
        // b sends a result for a's micro-batch, then for one that does not exist.
        let d = s.received(result(0, record()), from: b, now: 1)
        #expect(evicted(d) == [b])
        #expect(s.results.isEmpty && s.assignment(of: a) == 0)
        #expect(s.pending == [1], "b's own micro-batch goes back to the queue")
        let e = s.received(result(9, record()), from: a, now: 2)
        #expect(evicted(e) == [a] && s.results.isEmpty)
    }

    @Test("invalid records from the holder are rejected, the micro-batch requeued, the sender evicted", arguments: [
        "nan", "huge", "infinite loss", "negative loss", "label count", "unknown name", "wrong shape", "missing tensor",
    ])
    func invalidRecords(kind: String) {
        var s = scheduler(k: 1)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        #expect(s.assignment(of: a) == 0)
        let bad: MicroBatchGradients = switch kind {
        case "nan": record(value: .nan)
        case "huge": record(value: 1e30)
        case "infinite loss": record(loss: .infinity)
        case "negative loss": record(loss: -1)
        case "label count": record(labels: .max)
        case "unknown name": record(names: ["w", "evil"])
        case "wrong shape": record(shapes: [[2, 2], [3]])
        default: record(names: ["w"], shapes: [[2, 2]])
        }
        #expect(s.check(bad, samples: 2) != nil, "\(kind) must not pass the check")
        let d = s.received(result(0, bad), from: a, now: 1)
        #expect(evicted(d) == [a], "\(kind): \(d)")
        #expect(s.results.isEmpty, "\(kind) was accepted")
        #expect(s.assignment(of: b) == 0, "\(kind): the micro-batch goes to the other worker")
        // The honest copy completes the step.
        #expect(s.received(result(0, record()), from: b, now: 2).completes(3))
    }

    @Test("a valid record passes the check at the bounds")
    func validBounds() {
        let s = scheduler()
        #expect(s.check(record(labels: 10, value: StepScheduler.Policy.maxGradient), samples: 2) == nil)
        #expect(s.check(record(loss: 0, labels: 0, value: -StepScheduler.Policy.maxGradient), samples: 2) == nil)
        #expect(s.check(record(labels: 11), samples: 2) != nil, "2 samples of at most 5 labels each")
    }

    @Test("Failed goes to another worker; the same micro-batch failing on every worker ends the step with the reasons")
    func failedEverywhere() {
        var s = scheduler(k: 1)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        let first = s.received(Envelope(jobID: 7, step: 3, .failed(Failed(microBatch: 0, reason: "disk full"))), from: a, now: 1)
        #expect(stepFailure(first) == nil && evicted(first).isEmpty, "a failure is not an offence")
        #expect(s.assignment(of: b) == 0, "the micro-batch went to the other worker")
        let second = s.received(Envelope(jobID: 7, step: 3, .failed(Failed(microBatch: 0, reason: "token id 99\nforged line"))), from: b, now: 2)
        let reasons = stepFailure(second)
        #expect(reasons?.count == 2)
        #expect(reasons?.first?.contains("disk full") == true)
        #expect(reasons?.last?.contains("\\x0a") == true, "a peer's reason is sanitised: \(reasons ?? [])")
        #expect(!s.received(result(0, record()), from: a, now: 3).completes(3), "nothing completes a failed step")
    }

    @Test("a lone worker retries a micro-batch it failed (others may still be joining), up to maxFailures")
    func loneWorker() {
        var s = scheduler(k: 1)
        _ = s.start(workers: [a], haveParams: [a], now: 0)
        let failed = Envelope(jobID: 7, step: 3, .failed(Failed(microBatch: 0, reason: "no")))
        #expect(stepFailure(s.received(failed, from: a, now: 1)) == nil)
        #expect(s.assignment(of: a) == 0, "given back to the only worker")
        #expect(stepFailure(s.received(failed, from: a, now: 2)) == nil)
        #expect(stepFailure(s.received(failed, from: a, now: 3))?.count == 3)
    }

    @Test("maxFailures failures of one micro-batch end the step even with workers left")
    func maxFailures() {
        var s = scheduler(k: 1)
        _ = s.start(workers: [a, b, c, WorkerID("d")], haveParams: [a, b, c], now: 0)
        var last: [Directive] = []
        for w in [a, b, c] {
            let holder = [a, b, c, WorkerID("d")].first { s.assignment(of: $0) == 0 }
            #expect(holder == w)
            last = s.received(Envelope(jobID: 7, step: 3, .failed(Failed(microBatch: 0, reason: "no"))), from: w, now: 1)
        }
        #expect(stepFailure(last)?.count == 3)
    }

    @Test("a worker that heartbeats but never answers is evicted at the work deadline and its micro-batch requeued")
    func workDeadline() {
        var s = scheduler(k: 2)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        #expect(s.nextDeadline == 1_000)
        _ = s.received(result(1, record()), from: b, now: 10)
        #expect(s.results.count == 1)
        #expect(s.tick(now: 999).isEmpty)
        let d = s.tick(now: 1_000)
        #expect(evicted(d) == [a])
        #expect(s.assignment(of: b) == 0, "b takes a's micro-batch")
        #expect(s.received(result(0, record()), from: b, now: 1_100).completes(3))
    }

    @Test("the failures of one key count once however many routing ids it uses")
    func principal() {
        var s = scheduler(k: 1)
        let k1 = WorkerID("x", key: "worker-1.key"), k1again = WorkerID("y", key: "worker-1.key"), h = WorkerID("h", key: "worker-2.key")
        _ = s.start(workers: [k1, h], haveParams: [k1, h], now: 0)
        let holder = s.assignment(of: k1) == 0 ? k1 : h
        _ = s.received(Envelope(jobID: 7, step: 3, .failed(Failed(microBatch: 0, reason: "no"))), from: holder, now: 1)
        if holder == k1 {
            // The same key back under another routing id is not given the micro-batch it failed.
            _ = s.workerGone(k1, now: 2)
            _ = s.workerJoined(k1again, haveParams: true, now: 3)
            #expect(s.assignment(of: k1again) == nil && s.assignment(of: h) == 0)
        }
    }

    // MARK: admission

    static let fingerprint = "vision=model.safetensors:10:aa|config:1111;language=model.safetensors:20:bb|config:2222"

    func core() -> CoordinatorCore {
        CoordinatorCore(jobID: 3, computeID: 42, configJSON: "{\"model\":{}}", backbone: Self.fingerprint, step: 0,
                        params: Self.params, heartbeatMs: 100, timeoutMs: 300, policy: Self.policy)
    }

    func hello(_ name: String, backbone: String = fingerprint, computeID: UInt64 = 42) -> Envelope {
        Envelope(jobID: 0, step: 0, .hello(Hello(workerName: name, backbone: backbone, computeID: computeID)))
    }

    func replies(_ d: [Directive], to id: WorkerID) -> [Message] {
        d.compactMap { if case .send(let t, let e) = $0, t == id { e.message } else { nil } }
    }

    @Test("a probe learns the worker part of the job and nothing else; a refusal does not reveal the fingerprint")
    func probeAndRefusal() {
        var core = core()
        let probe = replies(core.received(hello("p", backbone: "", computeID: 0), from: a, now: 0), to: a)
        guard case .welcome(let w)? = probe.first else { Issue.record("no welcome: \(probe)"); return }
        #expect(w.params.isEmpty && w.configJSON == "{\"model\":{}}")
        #expect(!core.membership.contains(a))
        let other = "vision=model.safetensors:10:aa|config:1111;language=model.safetensors:20:cc|config:3333"
        let refused = replies(core.received(hello("x", backbone: other), from: b, now: 0), to: b)
        guard case .refuse(let reason)? = refused.first else { Issue.record("not refused: \(refused)"); return }
        #expect(reason.contains("language weights and language config.json"), "\(reason)")
        #expect(!reason.contains("aa") && !reason.contains("bb") && !reason.contains("1111"), "the refusal leaks: \(reason)")
        #expect(!core.membership.contains(b))
    }

    @Test("a worker whose job config differs beyond paths is refused")
    func computeID() {
        var core = core()
        let d = replies(core.received(hello("x", computeID: 41), from: a, now: 0), to: a)
        guard case .refuse(let reason)? = d.first else { Issue.record("admitted: \(d)"); return }
        #expect(reason.contains("other than a path"))
    }

    @Test("under CURVE a member is its key: another key on its routing id replaces it (its work requeued), never speaks as it")
    func boundToKey() {
        var core = core()
        let member = WorkerID("local-0", key: "worker-1.key")
        _ = core.received(hello("real"), from: member, now: 0)
        _ = core.beginStep(0, epoch: 0, microBatches: [[0]], dropout: true, params: Self.params, backupAfterMs: 10_000, now: 0)
        #expect(core.scheduler?.assignment(of: member) == 0)
        // Another key takes the routing id (ZeroMQ hands it to the newest connection): the member is out,
        // its micro-batch is requeued and goes to the newcomer, which is a member of its own.
        let impostor = WorkerID("local-0", key: "worker-2.key")
        _ = core.received(hello("evil"), from: impostor, now: 1)
        #expect(core.membership.live == [impostor])
        #expect(core.scheduler?.assignment(of: impostor) == 0 && core.scheduler?.assignment(of: member) == nil)
        // The old member's messages are not taken for the newcomer's, nor its own.
        #expect(!core.admits(member, kind: MessageKind.result.rawValue))
        // The real worker reconnects: it takes the routing id back, the same way.
        _ = core.received(hello("real"), from: member, now: 2)
        #expect(core.membership.live == [member])
        // The same key under a new routing id: the worker restarted; it replaces its old self.
        let back = WorkerID("local-0b", key: "worker-1.key")
        _ = core.received(hello("real"), from: back, now: 3)
        #expect(core.membership.live == [back])
    }

    @Test("strangers may only say Hello; membership is capped")
    func strangers() {
        var core = core()
        #expect(core.admits(a, kind: MessageKind.hello.rawValue))
        #expect(!core.admits(a, kind: MessageKind.result.rawValue) && !core.admits(a, kind: MessageKind.bye.rawValue))
        for i in 0..<CoordinatorCore.maxMembers { _ = core.received(hello("w\(i)"), from: WorkerID("w\(i)"), now: 0) }
        let extra = WorkerID("one-too-many")
        let d = replies(core.received(hello("x"), from: extra, now: 0), to: extra)
        guard case .refuse? = d.first else { Issue.record("admitted past the cap"); return }
        #expect(core.membership.members.count == CoordinatorCore.maxMembers)
    }

    @Test("a member's invalid result evicts it through the core: it is removed and refused")
    func evictionThroughCore() {
        var core = core()
        _ = core.received(hello("a"), from: a, now: 0)
        _ = core.received(hello("b"), from: b, now: 0)
        _ = core.beginStep(0, epoch: 0, microBatches: [[0], [1]], dropout: true, params: Self.params, backupAfterMs: 10_000, now: 0)
        let bad = Envelope(jobID: 3, step: 0, .result(WorkResult(microBatch: 1, gradients: record(value: .nan))))
        let holder = core.scheduler!.assignment(of: a) == 1 ? a : b
        let d = core.received(bad, from: holder, now: 1)
        #expect(!core.membership.contains(holder))
        guard case .refuse(let reason)? = replies(d, to: holder).first else { Issue.record("not refused: \(d)"); return }
        #expect(reason.hasPrefix("evicted:"))
    }

    @Test("names a peer chose are printable and bounded in logs")
    func sanitised() {
        #expect(Sanitized.text("ok-name_1") == "ok-name_1")
        #expect(Sanitized.text("a\nb\u{1B}[31m") == "a\\x0ab\\x1b[31m")
        #expect(Sanitized.text(String(repeating: "x", count: 1000)).count < 80)
        #expect(WorkerID(Array(repeating: 0x0A, count: 200)).description.count < 80)
    }
}
