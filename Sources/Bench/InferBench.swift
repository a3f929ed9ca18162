import Model
import Training

/// Forward-only multiple-choice scoring (DEHVFModel.choiceLogits: logits of 4 choice letters at one
/// answer position per sample) on cached features, in all three modes, interleaved round by round.
enum InferBench {
    static func run(_ o: BenchOptions, into report: Report) throws {
        for shape in o.shapes {
            report.section("infer: \(shape.name) (B \(shape.batch), T \(shape.textTokens), M \(shape.vision.numPatches))")
            let w = try Workload(shape)
            let modes = o.modes
            let setups = try modes.map { mode -> (DEHVFModel, TensorSet, TrainingBatch, Double) in
                let (model, params) = try w.model(mode)
                return (model, params, try w.batch(mode), try FlopCount(shape, mode).infer)
            }
            let positions = [Int32](repeating: Int32(shape.textTokens - shape.labelTokens - 1), count: shape.batch)
            let choices: [Int32] = [10, 11, 12, 13]
            func score(_ s: (DEHVFModel, TensorSet, TrainingBatch, Double)) throws -> Double {
                let start = now()
                _ = try s.0.choiceLogits(s.2, params: s.1, answerPositions: positions, choiceTokenIDs: choices)
                return now() - start
            }
            for s in setups { for _ in 0..<o.warmup { _ = try score(s) } }
            var ceilings: [Double] = [], times = [[Double]](repeating: [], count: modes.count)
            for _ in 0..<o.runs {
                ceilings.append(GemmBench.ceiling())
                for (i, s) in setups.enumerated() { times[i].append(try score(s)) }
            }
            let ceiling = Samples(ceilings)
            report.add("infer", config: shape.name, mode: "", name: "sgemm 2048 ceiling", unit: "GFLOP/s", ceiling)
            for (i, mode) in modes.enumerated() {
                let t = Samples(times[i])
                report.add("infer", config: shape.name, mode: mode.rawValue, name: "samples/s", unit: "samples/s", t.rate(Double(shape.batch)))
                report.add("infer", config: shape.name, mode: mode.rawValue, name: "fraction of gemm ceiling", unit: "ratio",
                           t.rate(setups[i].3 / 1e9).over(ceiling))
            }
            if let c = modes.firstIndex(of: .concat) {
                for (i, mode) in modes.enumerated() where mode != .concat {
                    report.add("infer", config: shape.name, mode: "\(mode.rawValue)/concat", name: "time ratio", unit: "ratio",
                               Samples(times[i]).over(Samples(times[c])))
                }
            }
        }
    }
}
