import Cluster
import Foundation
import Model
import Shard
import Training

/// Computes the micro-batch gradient records of one step, wherever that happens.
protocol StepExecutor: AnyObject {
    /// One record per micro-batch, in micro-batch order.
    func gradients(step: Int, epoch: Int, microBatches: [[Int]], params: TensorSet) throws -> [MicroBatchGradients]
    /// Scores (with `maxNewTokens` > 0 also captions) the `units` of `dataset` at `params`, the
    /// parameters after `steps` steps: one result per unit, in unit order. `progress` gets rows done.
    func evaluate(after steps: Int, dataset: DatasetFile, units: [[Int]], params: TensorSet, maxNewTokens: Int,
                  eos: Int32?, progress: (Int) -> Void) throws -> [EvalResult]
    var workersAlive: Int { get }
    /// Seconds spent computing the last step's micro-batches, summed over them.
    var lastComputeSeconds: Double { get }
    /// A short status for the progress line.
    var status: String { get }
    func shutdown()
}

/// `launcher: inprocess`: every micro-batch here, in order.
final class InProcessExecutor: StepExecutor {
    let engine: TrainingEngine
    init(engine: TrainingEngine) { self.engine = engine }
    private(set) var lastComputeSeconds = 0.0
    /// Whether `evaluate` keeps each unit's choice logits in `choiceLogits` (`coordinator eval --logits`).
    var recordChoiceLogits = false
    /// The last evaluation's choice logits, one [rows][C] per unit, when `recordChoiceLogits` is on.
    private(set) var choiceLogits: [[[Float]]] = []

    func gradients(step: Int, epoch: Int, microBatches: [[Int]], params: TensorSet) throws -> [MicroBatchGradients] {
        let start = Date()
        defer { lastComputeSeconds = Date().timeIntervalSince(start) }
        return try microBatches.map { try engine.gradients(indices: $0, params: params, step: step, dropout: true) }
    }

    func evaluate(after steps: Int, dataset: DatasetFile, units: [[Int]], params: TensorSet, maxNewTokens: Int,
                  eos: Int32?, progress: (Int) -> Void) throws -> [EvalResult] {
        var done = 0
        choiceLogits = []
        return try units.enumerated().map { u, unit in
            let (r, logits) = try engine.evaluateWithLogits(unit: UInt32(u), dataset, indices: unit, params: params,
                                                            maxNewTokens: maxNewTokens, eos: eos)
            if recordChoiceLogits { choiceLogits.append(logits) }
            done += unit.count
            progress(done)
            return r
        }
    }

    var workersAlive: Int { 1 }
    var status: String { "in-process" }
    func shutdown() {}
}
