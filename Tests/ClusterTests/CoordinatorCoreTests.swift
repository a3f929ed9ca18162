import Cluster
import Model
import TestSupport
import Testing

@Suite("Coordinator core (admission + membership + scheduling)")
struct CoordinatorCoreTests {
    let a = WorkerID("a"), b = WorkerID("b"), x = WorkerID("x")
    let p0 = TensorSet([NamedTensor("p", Tensor(shape: [1], values: [0]))])
    let p1 = TensorSet([NamedTensor("p", Tensor(shape: [1], values: [1]))])

    func core() -> CoordinatorCore {
        CoordinatorCore(jobID: 3, computeID: 7, configJSON: "{}", backbone: "fp", step: 0, params: p0, heartbeatMs: 100,
                        timeoutMs: 300, policy: StepScheduler.Policy(backupAfterMs: 10_000, workTimeoutMs: 60_000, maxLabelsPerSample: 4))
    }

    func hello(_ name: String, backbone: String = "fp", version: UInt16 = wireProtocolVersion) -> Envelope {
        Envelope(jobID: 0, step: 0, .hello(Hello(workerName: name, backbone: backbone, computeID: 7, protocolVersion: version)))
    }

    func sent(_ d: [Directive], to id: WorkerID) -> [MessageKind] {
        d.compactMap { if case .send(let t, let e) = $0, t == id { e.message.kind } else { nil } }
    }

    @Test("Hello with the right backbone is welcomed; wrong backbone or version is refused")
    func admission() {
        var c = core()
        #expect(sent(c.received(hello("a"), from: a, now: 0), to: a) == [.welcome])
        #expect(sent(c.received(hello("x", backbone: "other"), from: x, now: 0), to: x) == [.refuse])
        #expect(sent(c.received(hello("x", version: 9), from: x, now: 0), to: x) == [.refuse])
        #expect(c.membership.live == [a])
        #expect(sent(c.undecodable(.unsupportedVersion(9), from: x, now: 1), to: x) == [.refuse])
        #expect(sent(c.undecodable(.truncated("meta"), from: x, now: 1), to: x).isEmpty)
        // A non-member's result is not trusted.
        let r = Envelope(jobID: 3, step: 0, .result(WorkResult(microBatch: 0, gradients: MicroBatchGradients(lossSum: 0, labelCount: 0, grads: TensorSet()))))
        #expect(c.received(r, from: x, now: 1).allSatisfy { if case .log = $0 { true } else { false } })
    }

    @Test("a whole step: params then work, a death mid-step, a late joiner, completion")
    func step() {
        var c = core()
        _ = c.received(hello("a"), from: a, now: 0)
        _ = c.received(hello("b"), from: b, now: 0)
        let start = c.beginStep(1, epoch: 0, microBatches: [[0], [1], [2]], dropout: true, params: p1, backupAfterMs: 10_000, now: 10)
        #expect(sent(start, to: a) == [.params, .work] && sent(start, to: b) == [.params, .work])
        // b goes silent; a keeps heartbeating and finishes micro-batch 0.
        _ = c.received(Envelope(jobID: 3, step: 1, .heartbeat), from: a, now: 200)
        let r0 = c.received(Envelope(jobID: 3, step: 1, .result(WorkResult(microBatch: 0, gradients: MicroBatchGradients(lossSum: 1, labelCount: 1, grads: p1)))), from: a, now: 250)
        #expect(sent(r0, to: a) == [.work])  // micro-batch 2
        let t = c.tick(now: 400)
        #expect(t.contains(.workerDied(b, name: "b")))
        #expect(c.scheduler?.pending == [1])
        // A new worker joins mid-step: welcomed with the current params and given b's micro-batch.
        let j = c.received(hello("x"), from: x, now: 410)
        #expect(sent(j, to: x) == [.welcome, .work])
        _ = c.received(Envelope(jobID: 3, step: 1, .result(WorkResult(microBatch: 2, gradients: MicroBatchGradients(lossSum: 1, labelCount: 1, grads: p1)))), from: a, now: 420)
        let done = c.received(Envelope(jobID: 3, step: 1, .result(WorkResult(microBatch: 1, gradients: MicroBatchGradients(lossSum: 1, labelCount: 1, grads: p1)))), from: x, now: 430)
        #expect(done.completes(1))
        #expect(c.scheduler?.results.map(\.microBatch) == [0, 1, 2])
    }

    @Test("Bye returns the worker's micro-batch to the queue")
    func bye() {
        var c = core()
        _ = c.received(hello("a"), from: a, now: 0)
        _ = c.received(hello("b"), from: b, now: 0)
        _ = c.beginStep(0, epoch: 0, microBatches: [[0], [1]], dropout: false, params: p0, backupAfterMs: 10_000, now: 0)
        let d = c.received(Envelope(jobID: 3, step: 0, .bye(unfinished: [1])), from: b, now: 5)
        #expect(d.contains(.workerLeft(b, name: "b")))
        #expect(c.scheduler?.pending == [1])
        #expect(c.membership.live == [a])
    }
}
