import Model
import Training

/// Greedy generation (DEHVFModel.greedy) of `newTokens` tokens after a `promptTokens`-token prompt per
/// row, with the key/value cache and without it (every step re-runs the whole prefix), in all three modes,
/// interleaved round by round. No EOS: every row generates every token, so both paths do the full work.
enum GenerateBench {
    static func run(_ o: BenchOptions, promptTokens: Int, newTokens: Int, into report: Report) throws {
        for shape in o.shapes {
            report.section("generate: \(shape.name) (B \(shape.batch), prompt \(promptTokens), new \(newTokens), M \(shape.vision.numPatches))")
            let w = try Workload(shape)
            let prompts = try o.modes.map { mode -> TrainingBatch in
                let b = shape.batch, t = shape.textTokens
                let ids = (0..<b).flatMap { w.inputIDs[($0 * t)..<($0 * t + promptTokens)] }
                return TrainingBatch(tokens: promptTokens, inputIDs: ids, labels: [Int32](repeating: -100, count: ids.count),
                                     lengths: [Int32](repeating: Int32(promptTokens), count: b), sampleIndices: Array(0..<b),
                                     features: try w.features(mode).map { Optional($0) })
            }
            let models = try o.modes.map { try w.model($0) }
            func generate(_ i: Int, cache: Bool) throws -> [[Int32]] {
                try models[i].0.greedy(prompts[i], params: models[i].1, maxNewTokens: newTokens, eos: nil, pad: 0, cache: cache)
            }
            for i in o.modes.indices {
                let same = try generate(i, cache: true) == generate(i, cache: false)
                report.note("\(o.modes[i].rawValue): cached ids \(same ? "equal" : "DIFFER FROM") the uncached ones")
                for _ in 0..<o.warmup { _ = try generate(i, cache: true); _ = try generate(i, cache: false) }
            }
            var cached = [[Double]](repeating: [], count: o.modes.count), uncached = cached
            for _ in 0..<o.runs {
                for i in o.modes.indices {
                    var start = now()
                    _ = try generate(i, cache: true)
                    cached[i].append(now() - start)
                    start = now()
                    _ = try generate(i, cache: false)
                    uncached[i].append(now() - start)
                }
            }
            let tokens = Double(shape.batch * newTokens)
            for (i, mode) in o.modes.enumerated() {
                let c = Samples(cached[i]), u = Samples(uncached[i])
                report.add("generate", config: shape.name, mode: mode.rawValue, name: "cached tokens/s", unit: "tokens/s", c.rate(tokens))
                report.add("generate", config: shape.name, mode: mode.rawValue, name: "uncached tokens/s", unit: "tokens/s", u.rate(tokens))
                report.add("generate", config: shape.name, mode: mode.rawValue, name: "speed-up (uncached time / cached)",
                           unit: "ratio", u.over(c))
            }
        }
    }
}
