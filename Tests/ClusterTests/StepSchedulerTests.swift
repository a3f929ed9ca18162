import Cluster
import Model
import TestSupport
import Testing

@Suite("Step scheduler state machine")
struct StepSchedulerTests {
    let a = WorkerID("a"), b = WorkerID("b"), c = WorkerID("c")
    let params = TensorSet([NamedTensor("p", Tensor(shape: [1], values: [1]))])

    func scheduler(k: Int = 4, backup: Millis = 1000) -> StepScheduler {
        StepScheduler(jobID: 7, step: 5, epoch: 0, microBatches: (0..<k).map { [Int64($0 * 10), Int64($0 * 10 + 1)] },
                      dropout: true, params: params,
                      policy: StepScheduler.Policy(backupAfterMs: backup, workTimeoutMs: 60_000, maxLabelsPerSample: 4))
    }

    func result(_ mb: UInt32, job: UInt64 = 7, step: UInt64 = 5) -> Envelope {
        Envelope(jobID: job, step: step, .result(WorkResult(microBatch: mb, gradients: MicroBatchGradients(lossSum: Double(mb), labelCount: 1, grads: params))))
    }

    /// (worker, micro-batch) of every Work directive.
    func work(_ d: [Directive]) -> [(WorkerID, UInt32)] {
        d.compactMap { if case .send(let to, let e) = $0, case .work(let w) = e.message { (to, w.microBatch) } else { nil } }
    }

    func paramsSent(_ d: [Directive]) -> [WorkerID] {
        d.compactMap { if case .send(let to, let e) = $0, case .params = e.message { to } else { nil } }
    }

    @Test("one micro-batch per idle worker; params first to workers lacking them; completion once")
    func normalStep() {
        var s = scheduler()
        let d = s.start(workers: [a, b], haveParams: [a], now: 0)
        #expect(work(d).map(\.1) == [0, 1])
        #expect(paramsSent(d) == [b])
        if case .send(_, let e) = d.first(where: { if case .send(_, let e) = $0, case .work = e.message { true } else { false } }),
           case .work(let w) = e.message {
            #expect(w.samples == [0, 1] && w.dropout && e.step == 5 && e.jobID == 7)
        }
        #expect(work(s.received(result(0), from: a, now: 10)).map(\.1) == [2])
        #expect(work(s.received(result(1), from: b, now: 11)).map(\.1) == [3])
        #expect(!s.isComplete)
        _ = s.received(result(2), from: a, now: 12)
        let end = s.received(result(3), from: b, now: 13)
        #expect(end.completes(5))
        #expect(s.isComplete)
        #expect(s.results.map(\.microBatch) == [0, 1, 2, 3])
        #expect(!s.received(result(3), from: b, now: 14).completes(5))
    }

    @Test("stale step and other job results are dropped with a log (fencing)")
    func fencing() {
        var s = scheduler(k: 2)
        _ = s.start(workers: [a], haveParams: [a], now: 0)
        for bad in [result(0, step: 4), result(0, job: 8)] {
            let d = s.received(bad, from: a, now: 1)
            #expect(d.count == 1)
            if case .log = d[0] {} else { Issue.record("expected only a log, got \(d)") }
        }
        #expect(s.results.isEmpty && s.assignment(of: a) == 0)
    }

    @Test("a dead worker's micro-batch goes to another worker")
    func deathReassigns() {
        var s = scheduler(k: 3)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        _ = s.received(result(0), from: a, now: 5)  // a now computes 2, b still has 1
        #expect(s.assignment(of: a) == 2 && s.assignment(of: b) == 1)
        let d = s.workerGone(b, now: 6)
        #expect(work(d).isEmpty)  // a is busy: 1 waits in the queue
        #expect(s.pending == [1])
        #expect(work(s.received(result(2), from: a, now: 7)).map(\.1) == [1])
        #expect(s.received(result(1), from: a, now: 8).completes(5))
    }

    @Test("a worker joining mid-step gets the params and work")
    func midStepJoin() {
        var s = scheduler(k: 3)
        _ = s.start(workers: [a], haveParams: [a], now: 0)
        let d = s.workerJoined(c, now: 1)
        #expect(paramsSent(d) == [c])
        #expect(work(d).map { $0.0 } == [c])
        if case .send(_, let e) = d.first, case .params(let p) = e.message { #expect(p == params) } else { Issue.record("params must come first") }
    }

    @Test("a worker that joins again (restarted) loses its micro-batch to the queue and gets params again")
    func rejoin() {
        var s = scheduler(k: 2)
        _ = s.start(workers: [a], haveParams: [a], now: 0)
        #expect(s.assignment(of: a) == 0)
        let d = s.workerJoined(a, now: 5)
        #expect(paramsSent(d) == [a])
        #expect(work(d).map(\.1) == [0])
        #expect(s.pending == [1])
    }

    @Test("a slow micro-batch is backed up on an idle worker; first result wins, the late copy is ignored")
    func backup() {
        var s = scheduler(k: 2, backup: 100)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        _ = s.received(result(0), from: a, now: 10)
        #expect(s.tick(now: 50).isEmpty)  // b's batch is not slow yet
        let d = s.tick(now: 100)
        #expect(work(d).map { $0.0 } == [a] && work(d).map(\.1) == [1])
        #expect(work(s.tick(now: 500)).isEmpty)  // never a third copy
        let win = s.received(result(1), from: a, now: 120)
        #expect(win.completes(5))
        let late = s.received(result(1), from: b, now: 900)
        #expect(!late.completes(5) && s.results.count == 2)
        #expect(s.results[1].gradients.lossSum == 1)
    }

    @Test("a micro-batch as slow as its peers is not backed up; one out twice as long as the slowest accepted one is")
    func backupOnlyStragglers() {
        var s = scheduler(k: 2, backup: 100)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        _ = s.received(result(0), from: a, now: 600)  // a's micro-batch took 600 ms; b's has too, so far
        #expect(s.nextDeadline == 1200)
        #expect(work(s.tick(now: 1199)).isEmpty)
        let d = s.tick(now: 1200)
        #expect(work(d).map { $0.0 } == [a] && work(d).map(\.1) == [1])
    }

    @Test("losing one copy of a backed-up batch does not requeue it")
    func backupDeath() {
        var s = scheduler(k: 2, backup: 100)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        _ = s.received(result(0), from: a, now: 10)
        _ = s.tick(now: 200)  // a backs up 1
        #expect(s.workerGone(b, now: 201).isEmpty)
        #expect(s.pending.isEmpty)
        #expect(s.received(result(1), from: a, now: 250).completes(5))
    }

    @Test("a Result or Failed for a micro-batch the sender was not given evicts it, and the one it held goes to another worker",
          arguments: [false, true])
    func notGiven(failed: Bool) {
        var s = scheduler(k: 2)
        _ = s.start(workers: [a, b, c], haveParams: [a, b, c], now: 0)
        #expect(s.assignment(of: a) == 0 && s.assignment(of: b) == 1 && s.assignment(of: c) == nil)
        let bad = failed ? Envelope(jobID: 7, step: 5, .failed(Failed(microBatch: 1, reason: "no"))) : result(1)
        let d = s.received(bad, from: a, now: 5)
        #expect(d.contains { if case .workerEvicted(a, _) = $0 { true } else { false } }, "\(d)")
        // Micro-batch 0, which a held, is not lost with it (the step would never complete).
        #expect(work(d).map { $0.0 } == [c] && work(d).map(\.1) == [0])
        _ = s.received(result(1), from: b, now: 6)
        #expect(s.received(result(0), from: c, now: 7).completes(5))
        #expect(s.results.map(\.gradients.lossSum) == [0, 1])
    }

    @Test("an empty step completes at once; a step with no workers waits")
    func edges() {
        var e = scheduler(k: 0)
        #expect(e.start(workers: [a], haveParams: [], now: 0).completes(5))
        var s = scheduler(k: 1)
        #expect(work(s.start(workers: [], haveParams: [], now: 0)).isEmpty)
        #expect(work(s.workerJoined(a, now: 1)).map(\.1) == [0])
    }
}
