import Cluster
import Foundation
import Model
import Shard

/// The optimizer side of a job, owned by the coordinator: parameters, AdamW moments, the next step to
/// run, and the loss history. A step is applied from the exact sum of its micro-batch records, so the
/// result is the same whatever computed them and in whatever order they arrived (DESIGN.md §6).
///
/// Each step makes new parameter tensors rather than updating the old ones in place, so a set handed to
/// the wire (which sends tensors without copying them) is never changed under it.
public final class TrainState {
    public private(set) var params: TensorSet
    public let expAvg: TensorSet
    public let expAvgSq: TensorSet
    /// Steps completed, which is the global step (from 0) that runs next.
    public private(set) var step: Int
    public private(set) var history: [Float]

    public init(params: TensorSet) {
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

    /// Applies one optimizer step from the exact sum of every micro-batch record of step `step`: the
    /// summed gradient is divided by the global batch's label count, then AdamW updates new copies of the
    /// parameters. `combined` is not modified. Returns the step's loss (summed loss / label count).
    @discardableResult
    public func apply(_ combined: MicroBatchGradients, optim: JobConfig.Optim, totalSteps: Int) throws -> Float {
        guard combined.grads.names == params.names else {
            throw ExactSumError(message: "gradients \(combined.grads.names) do not match parameters \(params.names)")
        }
        let count = max(combined.labelCount, 1)
        let lr = Float(learningRate(step: step, base: optim.lr, warmup: optim.warmupSteps, total: totalSteps))
        let adam = AdamW(betas: (Float(optim.betas[0]), Float(optim.betas[1])), eps: Float(optim.eps),
                         weightDecay: Float(optim.weightDecay))
        let inv = Float(count)
        var next: [NamedTensor] = []
        for (i, g) in combined.grads.enumerated() {
            let grad = Tensor(zeros: g.tensor.shape)
            for k in 0..<grad.count { grad.data[k] = g.tensor.data[k] / inv }
            let param = params.tensors[i].copy()
            adam.update(param: param, grad: grad, expAvg: expAvg.tensors[i], expAvgSq: expAvgSq.tensors[i],
                        step: step, lr: lr)
            next.append(NamedTensor(g.name, param))
        }
        params = TensorSet(next)
        let loss = Float(combined.lossSum / Double(count))
        history.append(loss)
        step += 1
        return loss
    }

    /// Skips step `step` (its combined gradient is not finite, as mixed-precision training skips): the
    /// parameters and moments stay, the step counter advances, the loss (NaN or infinite) is recorded.
    @discardableResult
    public func skip(_ combined: MicroBatchGradients) -> Float {
        let loss = Float(combined.lossSum / Double(max(combined.labelCount, 1)))
        history.append(loss)
        step += 1
        return loss
    }

    /// A checkpoint of the state after `step` steps.
    public func checkpoint(job: JobConfig, backbone: String, epoch: Int) -> Checkpoint {
        Checkpoint(step: step, epoch: epoch, seed: UInt64(job.data.seed), config: job.canonicalJSON(), backbone: backbone,
                   params: params, expAvg: expAvg, expAvgSq: expAvgSq, lossHistory: history)
    }
}
