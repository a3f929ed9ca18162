import Foundation
import Model
import Shard
import Training

/// What length-aware micro-batches save: 512 training rows with lengths uniform in [32, 512] (16 label
/// tokens each, bench-config backbones, dehvf, cached features), in micro-batches of 8 and global batches
/// of 32, trained three ways: every micro-batch padded to 512 (what computing at the file's T did), each
/// micro-batch at the length of its longest row in the epoch's random order (the default), and in the
/// order `data.group_by_length` gives (the job's own ``Sampler``: one mega-batch of 16 global batches,
/// sorted by length). Timing every micro-batch of the epoch would take half an hour, so each round times
/// every 4th micro-batch of the two orders (16 of 64, spread over the whole range of lengths) and the
/// first 4 of the padded one (all padded micro-batches do the same work). Rounds alternate the three.
enum LengthBench {
    static let rows = 512, longest = 512, shortest = 32, globalBatch = 32, timedEvery = 4, paddedTimed = 4

    static func run(_ o: BenchOptions, into report: Report) throws {
        let shape = BenchShape.bench
        let b = shape.batch
        report.section("length: \(rows) rows, lengths uniform in [\(shortest), \(longest)], micro-batches of \(b), "
                       + "global batches of \(globalBatch), dehvf, \(shape.name) backbones")
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
        let grouped = try Sampler(count: rows, globalBatch: globalBatch, microBatch: b, seed: 3, groupingByLength: lengths)
            .permutation(epoch: 0)
        precondition(grouped.sorted() == Array(0..<rows) && Sampler.groupFactor * globalBatch >= rows)

        /// The micro-batches of `order` (rows in groups of `b`).
        func microBatches(_ order: [Int]) -> [[Int]] { stride(from: 0, to: order.count, by: b).map { Array(order[$0..<($0 + b)]) } }
        func timed(_ order: [Int]) -> [[Int]] { microBatches(order).enumerated().filter { $0.offset % timedEvery == 0 }.map(\.element) }
        let paddedSet = Array(microBatches(random).prefix(paddedTimed)), awareSet = timed(random), groupedSet = timed(grouped)

        /// Trains on each micro-batch in turn, each at the length of its longest row (or at `padTo`).
        func pass(_ set: [[Int]], padTo: Int?) throws {
            for rowsHere in set {
                let width = padTo ?? Int(rowsHere.map { lengths[$0] }.max()!)
                var bIDs: [Int32] = [], bLabels: [Int32] = []
                for r in rowsHere {
                    bIDs += ids[(r * longest)..<(r * longest + width)]
                    bLabels += labels[(r * longest)..<(r * longest + width)]
                }
                let batch = TrainingBatch(tokens: width, inputIDs: bIDs, labels: bLabels, lengths: rowsHere.map { lengths[$0] },
                                          sampleIndices: rowsHere, features: rowsHere.map { features[$0 % features.count] })
                _ = try model.gradients(batch, params: params, dropout: DropoutMask(p: 0.1, seed: 0, step: 0))
            }
        }
        var padded: [Double] = [], aware: [Double] = [], groupedTimes: [Double] = []
        for round in 0..<(o.warmup + o.runs) {
            // Seconds per sample, so the three figures compare although they time different row counts.
            let p = try timeRuns(runs: 1, warmup: 0) { try pass(paddedSet, padTo: longest) }.median / Double(paddedSet.count * b)
            let a = try timeRuns(runs: 1, warmup: 0) { try pass(awareSet, padTo: nil) }.median / Double(awareSet.count * b)
            let g = try timeRuns(runs: 1, warmup: 0) { try pass(groupedSet, padTo: nil) }.median / Double(groupedSet.count * b)
            if round >= o.warmup {
                padded.append(p); aware.append(a); groupedTimes.append(g)
            }
        }
        let sp = Samples(padded), sa = Samples(aware), sg = Samples(groupedTimes)
        report.add("length", config: shape.name, mode: "dehvf", name: "padded to \(longest): samples/s", unit: "samples/s", sp.rate(1))
        report.add("length", config: shape.name, mode: "dehvf", name: "length-aware: samples/s", unit: "samples/s", sa.rate(1))
        report.add("length", config: shape.name, mode: "dehvf", name: "length-aware + group_by_length: samples/s", unit: "samples/s", sg.rate(1))
        report.add("length", config: shape.name, mode: "dehvf", name: "speed-up, length-aware", unit: "x", sp.over(sa))
        report.add("length", config: shape.name, mode: "dehvf", name: "speed-up, length-aware + grouped", unit: "x", sp.over(sg))
        let mean = Double(lengths.reduce(0) { $0 + Int($1) }) / Double(rows)
        func tokens(_ set: [[Int]]) -> Int { set.reduce(0) { $0 + b * Int($1.map { lengths[$0] }.max()!) } }
        report.note(String(format: "mean row length %.0f of %d; tokens computed per sample over the epoch: padded %d, "
                           + "length-aware %.0f, grouped %.0f (timed micro-batches: %.0f, %.0f); unpadded %.0f", mean, longest, longest,
                           Double(tokens(microBatches(random))) / Double(rows), Double(tokens(microBatches(grouped))) / Double(rows),
                           Double(tokens(awareSet)) / Double(awareSet.count * b), Double(tokens(groupedSet)) / Double(groupedSet.count * b), mean))
    }
}
