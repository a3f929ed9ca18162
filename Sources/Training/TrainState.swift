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
    /// summed gradient is divided by the global batch's label count, its global L2 norm is taken, with
    /// `optim.max_grad_norm` it is clipped to that norm, then AdamW updates new copies of the parameters.
    /// `combined` is not modified.
    @discardableResult
    public func apply(_ combined: MicroBatchGradients, optim: JobConfig.Optim, totalSteps: Int) throws -> StepReport {
        guard combined.grads.names == params.names else {
            throw ExactSumError(message: "gradients \(combined.grads.names) do not match parameters \(params.names)")
        }
        let count = max(combined.labelCount, 1)
        let lr = Float(learningRate(step: step, base: optim.lr, warmup: optim.warmupSteps, total: totalSteps))
        let adam = AdamW(betas: (Float(optim.betas[0]), Float(optim.betas[1])), eps: Float(optim.eps),
                         weightDecay: Float(optim.weightDecay))
        let inv = Float(count)
        var grads: [Tensor] = []
        for g in combined.grads {
            let grad = Tensor(zeros: g.tensor.shape)
            let src = g.tensor.buffer, dst = grad.buffer
            for k in 0..<dst.count { dst[k] = src[k] / inv }
            grads.append(grad)
        }
        let norm = Self.globalNorm(grads)
        let coefficient = optim.gradientClip.map { Self.clipCoefficient(maxNorm: $0, norm: norm) } ?? 1
        var next: [NamedTensor] = []
        for (i, grad) in grads.enumerated() {
            if coefficient < 1 {
                let g = grad.buffer
                for k in 0..<g.count { g[k] *= coefficient }
            }
            let param = params.tensors[i].copy()
            adam.update(param: param, grad: grad, expAvg: expAvg.tensors[i], expAvgSq: expAvgSq.tensors[i],
                        step: step, lr: lr)
            next.append(NamedTensor(params.names[i], param))
        }
        params = TensorSet(next)
        let loss = Float(combined.lossSum / Double(count))
        history.append(loss)
        step += 1
        return StepReport(loss: loss, gradNorm: norm, clipCoefficient: coefficient)
    }

    /// The global L2 norm of a set of gradients, as `clip_grad_norm_` takes it over all parameters: the
    /// squares are added in Double, tensor by tensor in the set's order (the parameters' order, DESIGN.md
    /// §4) and element by element, so equal gradients give the same bits whatever computed them.
    public static func globalNorm(_ grads: [Tensor]) -> Double {
        var sum = 0.0
        for t in grads {
            for x in t.buffer {
                let v = Double(x)
                sum += v * v
            }
        }
        return sum.squareRoot()
    }

    /// `clip_grad_norm_`'s factor: max_norm / (norm + 1e-6) in float32, at most 1 (the gradient is only
    /// ever scaled down).
    public static func clipCoefficient(maxNorm: Double, norm: Double) -> Float {
        min(1, Float(maxNorm) / (Float(norm) + 1e-6))
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

/// What ``TrainState/apply(_:optim:totalSteps:)`` did with one step.
public struct StepReport: Sendable, Equatable {
    /// Summed loss / label count.
    public var loss: Float
    /// Global L2 norm of the combined gradient (divided by the label count), before any clipping.
    public var gradNorm: Double
    /// The factor the gradient was multiplied by: 1 unless `optim.max_grad_norm` clipped it.
    public var clipCoefficient: Float
}
