import Cluster
import Foundation
import Model
import TestSupport
import Testing
import Training

/// The coordinator's optimizer step (TrainState.apply: gradient / label count, the DESIGN.md §4 schedule,
/// AdamW with decay on rank >= 2 only) against torch.optim.AdamW and LambdaLR, step by step
/// (Tests/Fixtures/adamw, made by Scripts/reference/make_adamw_fixture.py; the constants below are its).
///
/// Tolerance: both sides run the same float32 element-wise formula, but torch computes the bias
/// corrections and the step size in double and we do in float: measured max |diff| 1.2e-7 on parameters of
/// O(1) after 8 steps (an ulp or two), 2.3e-7 relative on exp_avg_sq. 2e-6 absolute leaves a 15x margin,
/// while (simulated on the same fixture) decay on the rank-1 tensor is off by 0.028, eps inside the square
/// root by 0.16 (through `bias`, whose gradients are ~1e-7), bias correction one step late by 0.019, and a
/// schedule one step late by 0.050.
@Suite("AdamW matches torch.optim.AdamW")
struct AdamWReferenceTests {
    static let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/adamw/adamw.safetensors")
    static let shapes: [(String, [Int])] = [("weight", [3, 4]), ("bias", [4]), ("table", [2, 2, 3])]
    static let steps = 8, labelCount = 5

    func slice(_ stacked: Tensor, _ index: Int) -> Tensor {
        let inner = Array(stacked.shape.dropFirst()), n = inner.reduce(1, *)
        return Tensor(shape: inner, values: Array(stacked.buffer[(index * n)..<((index + 1) * n)]))
    }

    func maxDiff(_ a: Tensor, _ b: Tensor) -> Float {
        zip(a.array, b.array).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    @Test("every step of a warm-up + cosine job on rank-1, -2 and -3 tensors")
    func matchesTorch() throws {
        try check(fixture: "adamw.safetensors", maxGradNorm: nil)
    }

    /// `optim.max_grad_norm` against torch.nn.utils.clip_grad_norm_ before each torch step
    /// (adamw_clipped.safetensors: the same job, per-step gradient scales putting 4 of the 8 norms above 3).
    /// The norm is compared relative to its size: torch sums float32 squares per tensor, we sum all in
    /// double; 2e-6 is about 16 float32 ulps (measured: at most 1.2 ulps). Clipping moves the parameters
    /// by up to 0.11 in this job (the generator prints it), so a missing or misapplied clip fails the 2e-6
    /// bound on the parameters by far.
    @Test("with optim.max_grad_norm: the global norm and the clipped steps match clip_grad_norm_")
    func clippedMatchesTorch() throws {
        try check(fixture: "adamw_clipped.safetensors", maxGradNorm: 3.0)
    }

    func check(fixture: String, maxGradNorm: Double?) throws {
        let url = Self.url.deletingLastPathComponent().appendingPathComponent(fixture)
        let file = try SafetensorsFile(url: url)
        let params = TensorSet(try Self.shapes.map { ($0.0, try file.take("init/\($0.0)", shape: $0.1).copy()) })
        var optim = JobConfig.Optim()
        optim.lr = 0.05
        optim.betas = [0.9, 0.95]
        optim.eps = 1e-8
        optim.weightDecay = 0.1
        optim.warmupSteps = 3
        optim.steps = Self.steps
        optim.maxGradNorm = maxGradNorm
        let state = TrainState(params: params)
        let lrs = try file.take("lr", shape: [Self.steps])
        let norms = try maxGradNorm.map { _ in try file.take("grad_norm", shape: [Self.steps]) }
        var stacked: [String: (grad: Tensor, after: Tensor)] = [:]
        for (name, shape) in Self.shapes {
            stacked[name] = (try file.take("grad/\(name)", shape: [Self.steps] + shape),
                             try file.take("params/\(name)", shape: [Self.steps] + shape))
        }
        var clipped = 0
        for step in 0..<Self.steps {
            let lr = learningRate(step: step, base: optim.lr, warmup: optim.warmupSteps, total: Self.steps)
            #expect(abs(Float(lr) - lrs.data[step]) <= 1e-9, "step \(step): lr \(lr) vs torch \(lrs.data[step])")
            let grads = TensorSet(Self.shapes.map { NamedTensor($0.0, slice(stacked[$0.0]!.grad, step)) })
            let report = try state.apply(MicroBatchGradients(lossSum: 1, labelCount: Int64(Self.labelCount), grads: grads),
                                         optim: optim, totalSteps: Self.steps)
            if let norms, let maxGradNorm {
                let torchNorm = Double(norms.data[step])
                #expect(abs(report.gradNorm - torchNorm) <= 2e-6 * torchNorm, "step \(step): norm \(report.gradNorm) vs torch \(torchNorm)")
                #expect((report.clipCoefficient < 1) == (torchNorm > maxGradNorm), "step \(step): clip \(report.clipCoefficient)")
                if report.clipCoefficient < 1 { clipped += 1 }
            } else {
                #expect(report.clipCoefficient == 1)
            }
            for (name, _) in Self.shapes {
                let diff = maxDiff(state.params[name]!, slice(stacked[name]!.after, step))
                #expect(diff <= 2e-6, "step \(step) \(name): max |diff| \(diff)")
            }
        }
        if maxGradNorm != nil { #expect(clipped > 0 && clipped < Self.steps, "\(clipped) of \(Self.steps) steps clipped") }
        for (name, shape) in Self.shapes {
            let m = maxDiff(state.expAvg[name]!, try file.take("exp_avg/\(name)", shape: shape))
            let v = maxDiff(state.expAvgSq[name]!, try file.take("exp_avg_sq/\(name)", shape: shape))
            // exp_avg_sq of `bias` is ~1e-14: compare it relative to its own size.
            let vScale = max(try file.tensor("exp_avg_sq/\(name)").array.map(abs).max() ?? 0, 1e-30)
            #expect(m <= 1e-6, "exp_avg/\(name): max |diff| \(m)")
            #expect(v / vScale <= 1e-5, "exp_avg_sq/\(name): max |diff| \(v) of \(vScale)")
        }
    }

    @Test("the global norm is a fixed-order Double sum: the same bits for the same gradients, and torch's value")
    func globalNorm() {
        let a = Tensor(shape: [2], values: [3, 4]), b = Tensor(shape: [1], values: [12])
        #expect(TrainState.globalNorm([a, b]) == 13)
        #expect(TrainState.clipCoefficient(maxNorm: 26, norm: 13) == 1)
        #expect(TrainState.clipCoefficient(maxNorm: 6.5, norm: 13) == Float(6.5) / (Float(13) + 1e-6))
    }
}
