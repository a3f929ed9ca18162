import Cluster
import Foundation
import Model
import Shard
import Testing
import Training

/// Held-out scoring: one forward pass per unit gives what separate loss and choice-logit passes give, and
/// a report combined from units does not depend on how they were grouped into results.
@Suite("Evaluation")
struct EvaluationTests {
    /// Parameters away from the initial ones, so that the fuser's part of the logits matters.
    static func perturbed(_ engine: TrainingEngine) -> TensorSet {
        let params = engine.initialParameters()
        for entry in params {
            for i in 0..<entry.tensor.count { entry.tensor.data[i] += 0.05 * Float((i * 7919) % 13 - 6) }
        }
        return params
    }

    @Test("a unit's score is bitwise the loss pass and the choice-logit pass, its prediction their argmax over num_choices")
    func scoreIsLossAndChoices() throws {
        var job = try DemoFixture.job()
        job.data.eval = ConfigPath(try DemoFixture.data().appendingPathComponent("test.h5").path)
        let engine = try TrainingEngine(job: job)
        let params = Self.perturbed(engine)
        let test = try engine.open(job.data.eval!.path)
        let indices = [3, 0, 17, 40, 41]
        let r = try engine.evaluate(unit: 9, test, indices: indices, params: params)
        let (batch, mb) = try engine.batch(test, indices: indices)
        let loss = try engine.model.loss(batch, params: params)
        let logits = try engine.model.choiceLogits(batch, params: params, answerPositions: mb.answerPosition!,
                                                   choiceTokenIDs: test.choiceTokenIDs!)
        #expect(r.unit == 9 && r.lossSum.bitPattern == loss.lossSum.bitPattern && r.labelCount == Int64(loss.labelCount))
        for (i, row) in logits.enumerated() {
            let n = Int(mb.numChoices![i])
            #expect(r.predictions[i] == Int32((0..<n).max { row[$0] < row[$1] }!))
        }
        #expect(r.generated.isEmpty)
    }

    @Test("units are consecutive runs of the unit size; the report's loss is the exact sum over units, its accuracy counted per row")
    func reportFromUnits() throws {
        #expect(EvalReport.units(rows: 10, size: 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
        #expect(EvalReport.units(rows: 0, size: 4).isEmpty)
        var job = try DemoFixture.job()
        job.data.eval = ConfigPath(try DemoFixture.data().appendingPathComponent("test.h5").path)
        let engine = try TrainingEngine(job: job)
        let params = Self.perturbed(engine)
        let test = try engine.open(job.data.eval!.path)
        let units = EvalReport.units(rows: test.count, size: 8)
        let results = try units.enumerated().map { try engine.evaluate(unit: UInt32($0), test, indices: $1, params: params) }
        let report = try EvalReport(dataset: test, units: units, results: results)
        #expect(report.samples == test.count && report.overall?.total == test.count)
        // The loss sum is order-independent (a worker's results arrive in any order).
        let reversed = try EvalReport(dataset: test, units: units.reversed(), results: results.reversed())
        #expect(reversed.loss.bitPattern == report.loss.bitPattern && reversed.overall?.correct == report.overall?.correct)
        let answers = try test.readBatch(indices: Array(0..<test.count), images: false).answer!
        let predicted = results.flatMap(\.predictions)
        #expect(report.overall?.correct == zip(predicted, answers).filter { $0 == $1 }.count)
        #expect(try engine.evaluate(test, params: params, unitSize: 8).loss.bitPattern == report.loss.bitPattern)
        // A prediction that is not one of its row's choices, or a missing one, is refused, not counted.
        var bad = results
        bad[0].predictions[0] = 7
        #expect(throws: ShardError.self) { try EvalReport(dataset: test, units: units, results: bad) }
        bad = results
        bad[1].predictions.removeLast()
        #expect(throws: ShardError.self) { try EvalReport(dataset: test, units: units, results: bad) }
        #expect(throws: ShardError.self) { try EvalReport(dataset: test, units: units, results: Array(results.dropLast())) }
    }

    @Test("keep_best: accuracy ranks up, loss ranks down, a tie keeps the earlier checkpoint")
    func bestMetric() {
        #expect(BestMetric.accuracy.improves(0.6, on: 0.5) && !BestMetric.accuracy.improves(0.5, on: 0.5))
        #expect(BestMetric.loss.improves(1.0, on: 1.5) && !BestMetric.loss.improves(1.5, on: 1.5))
        #expect(BestMetric.loss.improves(9, on: nil) && !BestMetric.none.improves(1, on: 2))
    }
}
