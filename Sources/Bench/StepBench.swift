import Cluster
import Model
import Training

/// A full training step on one micro-batch of 8: forward and backward (DEHVFModel.gradients), the exact
/// sum (ExactSum.combine) and the AdamW update (TrainState.apply), in all three fusion modes, on cached
/// ViT features. The frozen ViT's one-time cost per image is reported on its own. Each round measures
/// the sgemm ceiling and then one step of each mode, so fractions and mode ratios are paired by round.
enum StepBench {
    static let modes: [FusionMode] = [.dehvf, .memvp, .concat]

    static func run(_ o: BenchOptions, into report: Report) throws {
        for shape in o.shapes {
            report.section("step: \(shape.name) (B \(shape.batch), T \(shape.textTokens), M \(shape.vision.numPatches), \(shape.labelTokens) label tokens)")
            let w = try Workload(shape)

            // The one-time ViT cost (candidate features of the micro-batch's images).
            let vitFlops = try FlopCount(shape, .dehvf).visionPerImage
            let vit = try timeRuns(runs: o.runs, warmup: o.warmup) { _ = try w.features(.dehvf); try w.resetFeatures() }
            let perImage = vit.map { $0 / Double(shape.batch) }
            report.add("step", config: shape.name, mode: "vit", name: "ViT forward per image (once)", unit: "ms", perImage.map { $0 * 1e3 })
            report.add("step", config: shape.name, mode: "vit", name: "ViT images/s", unit: "images/s", perImage.rate(1))
            report.add("step", config: shape.name, mode: "vit", name: "ViT GFLOP/s", unit: "GFLOP/s", perImage.rate(vitFlops / 1e9))

            let modes = o.modes
            let setups = try modes.map { mode -> (FusionMode, DEHVFModel, TrainState, TrainingBatch, Double) in
                let (model, params) = try w.model(mode)
                return (mode, model, TrainState(params: params), try w.batch(mode), try FlopCount(shape, mode).step)
            }
            var optim = JobConfig.Optim()
            optim.steps = 1_000_000
            func step(_ s: (FusionMode, DEHVFModel, TrainState, TrainingBatch, Double)) throws -> (total: Double, update: Double) {
                let start = now()
                let g = try s.1.gradients(s.3, params: s.2.params, dropout: DropoutMask(p: 0.1, seed: 0, step: s.2.step))
                let mid = now()
                try s.2.apply(try ExactSum.combine([g]), optim: optim, totalSteps: 1_000_000)
                let end = now()
                return (end - start, end - mid)
            }
            for s in setups { for _ in 0..<o.warmup { _ = try step(s) } }
            var ceilings: [Double] = [], totals = [[Double]](repeating: [], count: setups.count)
            var updates = totals
            for _ in 0..<o.runs {
                ceilings.append(GemmBench.ceiling())
                for (i, s) in setups.enumerated() {
                    let r = try step(s)
                    totals[i].append(r.total)
                    updates[i].append(r.update)
                }
            }
            let ceiling = Samples(ceilings)
            report.add("step", config: shape.name, mode: "", name: "sgemm 2048 ceiling", unit: "GFLOP/s", ceiling)
            var stepTimes: [FusionMode: Samples] = [:]
            for (i, s) in setups.enumerated() {
                let t = Samples(totals[i]), mode = s.0.rawValue
                stepTimes[s.0] = t
                let gflops = t.rate(s.4 / 1e9)
                report.add("step", config: shape.name, mode: mode, name: "step time", unit: "ms", t.map { $0 * 1e3 })
                report.add("step", config: shape.name, mode: mode, name: "samples/s", unit: "samples/s", t.rate(Double(shape.batch)))
                report.add("step", config: shape.name, mode: mode, name: "GFLOP per step", unit: "GFLOP", Samples([s.4 / 1e9]))
                report.add("step", config: shape.name, mode: mode, name: "achieved GFLOP/s", unit: "GFLOP/s", gflops)
                report.add("step", config: shape.name, mode: mode, name: "fraction of gemm ceiling", unit: "ratio", gflops.over(ceiling))
                report.add("step", config: shape.name, mode: mode, name: "exact sum + AdamW", unit: "ms", Samples(updates[i]).map { $0 * 1e3 })
                let withViT = t.map { $0 + perImage.median * Double(shape.batch) }
                report.add("step", config: shape.name, mode: mode, name: "samples/s with ViT each step", unit: "samples/s",
                           withViT.rate(Double(shape.batch)))
            }
            for mode in [FusionMode.dehvf, .memvp] {
                guard let a = stepTimes[mode], let c = stepTimes[.concat] else { continue }
                report.add("step", config: shape.name, mode: "\(mode.rawValue)/concat", name: "step time ratio", unit: "ratio", a.over(c))
            }
            AttentionProbe.run(o, shape: shape, into: report)
        }
    }
}
