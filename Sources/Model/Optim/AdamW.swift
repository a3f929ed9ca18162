import Foundation

/// The learning-rate schedule of DESIGN.md §4: linear warm-up over `warmup` steps, then a half-cycle
/// cosine to zero at `total`. `step` counts from 0.
public func learningRate(step: Int, base: Double, warmup: Int, total: Int) -> Double {
    if step < warmup { return base * Double(step + 1) / Double(warmup) }
    let span = max(total - warmup, 1)
    let progress = min(Double(step - warmup) / Double(span), 1)
    return 0.5 * base * (1 + cos(Double.pi * progress))
}

/// AdamW with PyTorch's semantics (torch.optim.AdamW, non-amsgrad, non-fused): decoupled decay
/// p -= lr*wd*p first, then bias-corrected moments with eps added after sqrt(v_hat).
/// Decay applies to tensors of rank >= 2 only (DESIGN.md §4).
public struct AdamW: Sendable {
    public var betas: (Float, Float)
    public var eps: Float
    public var weightDecay: Float

    public init(betas: (Float, Float) = (0.9, 0.95), eps: Float = 1e-8, weightDecay: Float = 0.02) {
        self.betas = betas
        self.eps = eps
        self.weightDecay = weightDecay
    }

    /// One update of `param` in place. `step` is the optimizer step counted from 0 (bias correction
    /// uses step+1, as PyTorch's state["step"] after its increment).
    public func update(param: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, step: Int, lr: Float) {
        precondition(param.count == grad.count && param.count == expAvg.count && param.count == expAvgSq.count)
        let (b1, b2) = betas
        let t = Float(step + 1)
        let bc1 = 1 - powf(b1, t)
        let bc2Sqrt = sqrtf(1 - powf(b2, t))
        let stepSize = lr / bc1
        let decay: Float = param.shape.count >= 2 ? 1 - lr * weightDecay : 1
        let p = param.data, g = grad.data, m = expAvg.data, v = expAvgSq.data
        for i in 0..<param.count {
            p[i] *= decay
            m[i] = m[i] * b1 + (1 - b1) * g[i]     // torch: exp_avg.lerp_(grad, 1-beta1)
            v[i] = v[i] * b2 + (1 - b2) * g[i] * g[i]
            let denom = sqrtf(v[i]) / bc2Sqrt + eps
            p[i] -= stepSize * m[i] / denom
        }
    }
}
