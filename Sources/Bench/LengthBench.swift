import Foundation
import Model
import Shard
import Training

/// What length-aware micro-batches save: 32 training rows with lengths uniform in [32, 512] (16 label
/// tokens each, bench-config backbones, dehvf, cached features), trained in micro-batches of 8 three
/// ways: every micro-batch padded to 512 (what computing at the file's T did), each micro-batch at the
/// length of its longest row (the default), and with `data.group_by_length` ordering the rows
/// (Sampler.groupedByLength), so a micro-batch's rows have similar lengths. Rounds alternate the three.
enum LengthBench {
    static let rows = 32, longest = 512, shortest = 32

    static func run(_ o: BenchOptions, into report: Report) throws {
        let shape = BenchShape.bench
        report.section("length: \(rows) rows, lengths uniform in [\(shortest), \(longest)], micro-batches of \(shape.batch), dehvf, \(shape.name) backbones")
        let w = try Workload(shape)
        let (model, params) = try w.model(.dehvf)
        let features = try w.features(.dehvf)
        var rng = BenchRNG(17)
        let lengths = (0..<rows).map { _ in Int32(shortest + rng.below(longest - shortest + 1)) }
        var ids = [Int32](repeating: 0, count: rows * longest), labels = [Int32](repeating: -100, count: rows * longest)
        for r in 0..<rows {
            for j in 0..<Int(lengths[r]) { ids[r * longest + j] = Int32(1 + rng.below(shape.language.vocabSize - 1)) }
            for j in (Int(lengths[r]) - shape.labelTokens)..<Int(lengths[r]) { labels[r * longest + j] = ids[r * longest + j] }
        }
        let random = Sampler.permutation(count: rows, seed: 3, epoch: 0)
        let grouped = Sampler.groupedByLength(random, lengths: lengths, megaBatch: rows)

        /// One pass over the rows in `order`, micro-batch by micro-batch, each at its working length (or
        /// at `padTo`).
        func pass(_ order: [Int], padTo: Int?) throws {
            var start = 0
            while start < order.count {
                let rowsHere = Array(order[start..<(start + shape.batch)])
                let width = padTo ?? Int(rowsHere.map { lengths[$0] }.max()!)
                var bIDs: [Int32] = [], bLabels: [Int32] = []
                for r in rowsHere {
                    bIDs += ids[(r * longest)..<(r * longest + width)]
                    bLabels += labels[(r * longest)..<(r * longest + width)]
                }
                let batch = TrainingBatch(tokens: width, inputIDs: bIDs, labels: bLabels, lengths: rowsHere.map { lengths[$0] },
                                          sampleIndices: rowsHere, features: rowsHere.map { features[$0 % features.count] })
                _ = try model.gradients(batch, params: params, dropout: DropoutMask(p: 0.1, seed: 0, step: 0))
                start += shape.batch
            }
        }
        var padded: [Double] = [], aware: [Double] = [], groupedTimes: [Double] = []
        for round in 0..<(o.warmup + o.runs) {
            let p = try timeRuns(runs: 1, warmup: 0) { try pass(random, padTo: longest) }
            let a = try timeRuns(runs: 1, warmup: 0) { try pass(random, padTo: nil) }
            let g = try timeRuns(runs: 1, warmup: 0) { try pass(grouped, padTo: nil) }
            if round >= o.warmup {
                padded.append(p.median); aware.append(a.median); groupedTimes.append(g.median)
            }
        }
        let n = Double(rows)
        let sp = Samples(padded), sa = Samples(aware), sg = Samples(groupedTimes)
        report.add("length", config: shape.name, mode: "dehvf", name: "padded to \(longest): samples/s", unit: "samples/s", sp.rate(n))
        report.add("length", config: shape.name, mode: "dehvf", name: "length-aware: samples/s", unit: "samples/s", sa.rate(n))
        report.add("length", config: shape.name, mode: "dehvf", name: "length-aware + group_by_length: samples/s", unit: "samples/s", sg.rate(n))
        report.add("length", config: shape.name, mode: "dehvf", name: "speed-up, length-aware", unit: "x", sp.over(sa))
        report.add("length", config: shape.name, mode: "dehvf", name: "speed-up, length-aware + grouped", unit: "x", sp.over(sg))
        let mean = Double(lengths.reduce(0) { $0 + Int($1) }) / n
        report.note(String(format: "mean row length %.0f of %d; tokens computed: padded %d, length-aware %d, grouped %d", mean, longest,
                           rows * longest, work(random, lengths), work(grouped, lengths)))
    }

    /// Tokens computed in micro-batches of 8 taken in `order`, each at its longest row.
    static func work(_ order: [Int], _ lengths: [Int32]) -> Int {
        stride(from: 0, to: order.count, by: 8).reduce(0) { sum, s in
            sum + 8 * Int(order[s..<(s + 8)].map { lengths[$0] }.max()!)
        }
    }
}
