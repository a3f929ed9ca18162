import Foundation
import Model
import Training

/// Computes the micro-batch gradient records of one step, wherever that happens.
protocol StepExecutor: AnyObject {
    /// One record per micro-batch, in micro-batch order.
    func gradients(step: Int, epoch: Int, microBatches: [[Int]], params: TensorSet) throws -> [MicroBatchGradients]
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

    func gradients(step: Int, epoch: Int, microBatches: [[Int]], params: TensorSet) throws -> [MicroBatchGradients] {
        let start = Date()
        defer { lastComputeSeconds = Date().timeIntervalSince(start) }
        return try microBatches.map { try engine.gradients(indices: $0, params: params, step: step, dropout: true) }
    }

    var workersAlive: Int { 1 }
    var status: String { "in-process" }
    func shutdown() {}
}
