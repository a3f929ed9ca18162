import Cluster
import Model
import Testing

/// An evaluation is scheduled like a step (one unit per idle worker, retries, fencing) and its results are
/// range-checked before they are taken.
@Suite("Evaluation scheduling")
struct EvaluationSchedulingTests {
    let a = WorkerID("a"), b = WorkerID("b")
    let params = TensorSet([NamedTensor("p", Tensor(shape: [1], values: [1]))])
    let fence = evaluationStep(40)

    func scheduler(units: Int = 3, maxNewTokens: UInt32 = 0) -> StepScheduler {
        StepScheduler(jobID: 7, step: fence, task: .evaluation(dataset: "/d/test.h5", maxNewTokens: maxNewTokens, eos: 2),
                      units: (0..<units).map { [Int64(2 * $0), Int64(2 * $0 + 1)] }, params: params,
                      policy: StepScheduler.Policy(backupAfterMs: 1000, workTimeoutMs: 60_000, maxLabelsPerSample: 4),
                      vocabularySize: 100)
    }

    func result(_ unit: UInt32, step: UInt64? = nil, predictions: [Int32] = [1, 0], generated: [[Int32]] = [],
                loss: Double = 1.5) -> Envelope {
        Envelope(jobID: 7, step: step ?? fence, .evalResult(EvalResult(unit: unit, lossSum: loss, labelCount: 2, predictions: predictions,
                                                                       generated: generated)))
    }

    func evalWork(_ d: [Directive]) -> [(WorkerID, EvalWork, UInt64)] {
        d.compactMap { if case .send(let to, let e) = $0, case .evalWork(let w) = e.message { (to, w, e.step) } else { nil } }
    }

    func evicted(_ d: [Directive]) -> [WorkerID] {
        d.compactMap { if case .workerEvicted(let id, _) = $0 { id } else { nil } }
    }

    func complete(_ d: [Directive]) -> [EvalResult]? {
        for case .evaluationComplete(let step, let results) in d where step == fence { return results }
        return nil
    }

    @Test("units go out as EvalWork under the fence with the dataset and settings; completion once, in unit order")
    func normal() throws {
        var s = scheduler(maxNewTokens: 3)
        let d = s.start(workers: [a, b], haveParams: [], now: 0)
        let sent = evalWork(d)
        #expect(sent.map(\.1.unit) == [0, 1] && sent.allSatisfy { $0.2 == fence })
        #expect(sent[0].1 == EvalWork(unit: 0, dataset: "/d/test.h5", samples: [0, 1], maxNewTokens: 3, eos: 2))
        // Parameters go first, under the fence too: a worker can hold no training step's for it.
        #expect(d.contains { if case .send(_, let e) = $0, case .params = e.message { e.step == fence } else { false } })
        let captions: [[Int32]] = [[4, 2], [9]]
        #expect(evalWork(s.received(result(1, generated: captions), from: b, now: 1)).map(\.1.unit) == [2])
        #expect(complete(s.received(result(0, generated: captions), from: a, now: 2)) == nil)
        let done = try #require(complete(s.received(result(2, generated: captions), from: b, now: 3)))
        #expect(done.map(\.unit) == [0, 1, 2])
        #expect(complete(s.received(result(2, generated: captions), from: b, now: 4)) == nil)
    }

    @Test("a training step's Result or a result under the training step is not an evaluation's")
    func fencing() {
        var s = scheduler()
        _ = s.start(workers: [a], haveParams: [a], now: 0)
        // The same unit index under the training step's number: a stale frame, dropped with a log.
        let stale = s.received(result(0, step: 40), from: a, now: 1)
        #expect(evicted(stale).isEmpty && complete(stale) == nil && s.assignment(of: a) == 0)
        // A gradient Result for an evaluation unit is a protocol violation: evicted, the unit requeued.
        let wrong = Envelope(jobID: 7, step: fence, .result(WorkResult(microBatch: 0, gradients: MicroBatchGradients(
            lossSum: 1, labelCount: 1, grads: params))))
        #expect(evicted(s.received(wrong, from: a, now: 2)) == [a])
        _ = s.workerGone(a, now: 3)   // what the core does with an eviction
        #expect(s.pending.contains(0) && s.evaluations.isEmpty)
    }

    @Test("an out-of-range result evicts its sender and the unit goes to another worker",
          arguments: [
              ("a choice out of range", [Int32(1), 5000], [[Int32]](), 1.5),
              ("a prediction missing", [Int32(1)], [[Int32]](), 1.5),
              ("a negative loss", [Int32(1), 0], [[Int32]](), -1.0),
              ("a NaN loss", [Int32(1), 0], [[Int32]](), Double.nan),
              ("a caption token past the vocabulary", [Int32(1), 0], [[Int32(100)], [1]], 1.5),
              ("a caption longer than asked", [Int32(1), 0], [[Int32(1), 1, 1, 1], [1]], 1.5),
              ("captions not one per row", [Int32(1), 0], [[Int32(1)]], 1.5),
          ])
    func invalid(_ what: String, predictions: [Int32], generated: [[Int32]], loss: Double) {
        var s = scheduler(maxNewTokens: 3)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        let d = s.received(result(0, predictions: predictions, generated: generated, loss: loss), from: a, now: 1)
        #expect(evicted(d) == [a], "\(what)")
        #expect(complete(d) == nil, "\(what)")
        #expect(s.evaluations.isEmpty, "\(what)")
        _ = s.workerGone(a, now: 2)
        // b finishes its own unit, then gets the one a sent garbage for.
        let next = s.received(result(1, generated: [[1], [2]]), from: b, now: 3)
        #expect(evalWork(next).map(\.1.unit).contains(0) || s.assignment(of: b) == 0, "\(what)")
    }

    @Test("a unit its worker fails goes to another; one that fails everywhere fails the evaluation")
    func failures() {
        var s = scheduler(units: 1)
        _ = s.start(workers: [a, b], haveParams: [a, b], now: 0)
        let failed = Envelope(jobID: 7, step: fence, .failed(Failed(microBatch: 0, reason: "disk error")))
        let d1 = s.received(failed, from: a, now: 1)
        #expect(!d1.contains { if case .stepFailed = $0 { true } else { false } })
        #expect(evalWork(d1).map { $0.0 } == [b])
        let d2 = s.received(failed, from: b, now: 2)
        #expect(d2.contains { if case .stepFailed(fence, 0, let reasons) = $0 { reasons.count == 2 } else { false } })
    }
}
