import Foundation
import Model
import Shard

/// The optimizer side of a job, owned by the coordinator: parameters, AdamW moments, the next step to
/// run, and the loss history. A step is applied from the exact sum of its micro-batch contributions, so
/// the result is the same whatever computed them and in whatever order they arrived (DESIGN.md §6).
public final class TrainState {
    public let params: ParameterSet
    public let expAvg: ParameterSet
    public let expAvgSq: ParameterSet
    /// Steps completed, which is the global step (from 0) that runs next.
    public private(set) var step: Int
    public private(set) var history: [Float]

    public init(params: ParameterSet) {
        self.params = params
        expAvg = params.zerosLike()
        expAvgSq = params.zerosLike()
        step = 0
        history = []
    }

    /// Resumes from a checkpoint, strictly against the job's model shape and backbone.
    public init(checkpoint c: Checkpoint, fuser: FuserConfig, backbone: String) throws {
        try c.validate(backbone: backbone, parameters: fuser.parameterShapes.map { ($0.name, $0.shape) })
        params = try fuser.parameters(from: c.params, what: "checkpoint \(c.source ?? "")")
        expAvg = try fuser.parameters(from: c.expAvg, what: "checkpoint optimizer/exp_avg")
        expAvgSq = try fuser.parameters(from: c.expAvgSq, what: "checkpoint optimizer/exp_avg_sq")
        step = c.step
        history = c.lossHistory
        guard history.count == step else {
            throw ShardError(.badValue, "history/loss has \(history.count) entries for step \(step)", path: c.source ?? "")
        }
    }

    /// Total optimizer steps of the job: `optim.steps`, or `optim.epochs` whole epochs.
    public static func totalSteps(_ optim: JobConfig.Optim, stepsPerEpoch: Int) -> Int {
        optim.steps ?? (optim.epochs ?? 1) * stepsPerEpoch
    }

    /// Applies one optimizer step from the combined contributions of every micro-batch of step `step`.
    /// Returns the step's loss (summed loss / label count over the global batch).
    @discardableResult
    public func apply(_ combined: GradientContribution, optim: JobConfig.Optim, totalSteps: Int) throws -> Float {
        let count = max(combined.labelCount, 1)
        let lr = Float(learningRate(step: step, base: optim.lr, warmup: optim.warmupSteps, total: totalSteps))
        let adam = AdamW(betas: (Float(optim.betas[0]), Float(optim.betas[1])), eps: Float(optim.eps),
                         weightDecay: Float(optim.weightDecay))
        guard combined.grads.map(\.name) == params.names else {
            throw ExactSumError(message: "gradients \(combined.grads.map(\.name)) do not match parameters \(params.names)")
        }
        for (i, g) in combined.grads.enumerated() {
            let grad = g.tensor
            let inv = Float(count)
            for k in 0..<grad.count { grad.data[k] /= inv }
            adam.update(param: params.tensors[i], grad: grad, expAvg: expAvg.tensors[i], expAvgSq: expAvgSq.tensors[i],
                        step: step, lr: lr)
        }
        let loss = Float(combined.lossSum / Double(count))
        history.append(loss)
        step += 1
        return loss
    }

    /// A checkpoint of the state after `step` steps.
    public func checkpoint(job: JobConfig, backbone: String, epoch: Int) -> Checkpoint {
        Checkpoint(step: step, epoch: epoch, seed: UInt64(job.data.seed), config: job.canonicalJSON(), backbone: backbone,
                   params: params.pairs, expAvg: expAvg.pairs, expAvgSq: expAvgSq.pairs, lossHistory: history)
    }
}

extension MicroBatchGradients {
    /// As a contribution to a step's exact sum.
    public var contribution: GradientContribution {
        GradientContribution(lossSum: lossSum, labelCount: Int64(labelCount),
                             grads: grads.pairs.map { NamedTensor($0.0, $0.1) })
    }
}
