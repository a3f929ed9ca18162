import Foundation
import Model
import Shard
import Training

/// What length-aware micro-batches save: 512 training rows with lengths uniform in [32, 512] (16 label
/// tokens each, bench-config backbones, dehvf, cached features), in micro-batches of 8 and global batches
/// of 32, trained three ways: every micro-batch padded to 512 (what computing at the file's T did), each
/// micro-batch at the length of its longest row in the epoch's random order (the default), and in the
/// order `data.group_by_length` gives (the job's own ``Sampler``: one mega-batch of 16 global batches,
/// sorted by length). Timing every micro-batch of the epoch would take half an hour a round, so round k
/// times every 4th micro-batch of the two orders starting at k mod 4 (4 rounds time the whole epoch
/// once) and 4 padded ones (all padded micro-batches do the same work). The three are interleaved micro-
/// batch by micro-batch, so that a burst of load from another tenant falls on all of them alike. The
/// FLOPs the engine computes for the same micro-batches (``FlopCount``) say what any speed-up can reach.
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

        /// Trains on one micro-batch at the length of its longest row (or at `padTo`); wall and CPU seconds.
        func train(_ rowsHere: [Int], padTo: Int?) throws -> (wall: Double, cpu: Double) {
            let width = padTo ?? Int(rowsHere.map { lengths[$0] }.max()!)
            var bIDs: [Int32] = [], bLabels: [Int32] = []
            for r in rowsHere {
                bIDs += ids[(r * longest)..<(r * longest + width)]
                bLabels += labels[(r * longest)..<(r * longest + width)]
            }
            let batch = TrainingBatch(tokens: width, inputIDs: bIDs, labels: bLabels, lengths: rowsHere.map { lengths[$0] },
                                      sampleIndices: rowsHere, features: rowsHere.map { features[$0 % features.count] })
            let (w0, c0) = (now(), cpuNow())
            _ = try model.gradients(batch, params: params, dropout: DropoutMask(p: 0.1, seed: 0, step: 0))
            return (now() - w0, cpuNow() - c0)
        }
        let randomBatches = microBatches(random), groupedBatches = microBatches(grouped)
        for _ in 0..<o.warmup {   // one micro-batch of each: sizes the workspaces and warms the caches
            _ = try train(randomBatches[0], padTo: longest)
            _ = try train(randomBatches[0], padTo: nil)
            _ = try train(groupedBatches[0], padTo: nil)
        }
        /// Seconds (wall and CPU) and samples, per kind and round.
        struct Tally { var wall = 0.0, cpu = 0.0, samples = 0 }
        var padded: [Tally] = [], aware: [Tally] = [], groupedTally: [Tally] = []
        for round in 0..<o.runs {
            var p = Tally(), a = Tally(), g = Tally()
            let offset = round % timedEvery
            for (i, index) in stride(from: offset, to: randomBatches.count, by: timedEvery).enumerated() {
                let ta = try train(randomBatches[index], padTo: nil)
                a.wall += ta.wall; a.cpu += ta.cpu; a.samples += b
                let tg = try train(groupedBatches[index], padTo: nil)
                g.wall += tg.wall; g.cpu += tg.cpu; g.samples += b
                if i % (randomBatches.count / timedEvery / paddedTimed) == 0 {
                    let tp = try train(randomBatches[index], padTo: longest)
                    p.wall += tp.wall; p.cpu += tp.cpu; p.samples += b
                }
            }
            padded.append(p); aware.append(a); groupedTally.append(g)
            report.note(String(format: "round %d (micro-batches %d, %d, ...): s/sample padded %.3f, length-aware %.3f, grouped %.3f "
                               + "(CPU %.3f, %.3f, %.3f)", round + 1, offset, offset + timedEvery, p.wall / Double(p.samples),
                               a.wall / Double(a.samples), g.wall / Double(g.samples), p.cpu / Double(p.samples),
                               a.cpu / Double(a.samples), g.cpu / Double(g.samples)))
        }
        func add(_ name: String, _ unit: String, _ s: Samples) {
            report.add("length", config: shape.name, mode: "dehvf", name: name, unit: unit, s)
        }
        func perSample(_ t: [Tally]) -> Samples { Samples(t.map { $0.wall / Double($0.samples) }) }
        let sp = perSample(padded), sa = perSample(aware), sg = perSample(groupedTally)
        add("padded to \(longest): samples/s", "samples/s", sp.rate(1))
        add("length-aware: samples/s", "samples/s", sa.rate(1))
        add("length-aware + group_by_length: samples/s", "samples/s", sg.rate(1))
        add("speed-up, length-aware (per round)", "x", sp.over(sa))
        add("speed-up, length-aware + grouped (per round)", "x", sp.over(sg))
        // All timed seconds per sample over all rounds: with a multiple of 4 rounds, every micro-batch of the epoch once.
        func total(_ t: [Tally], _ key: KeyPath<Tally, Double>) -> Double {
            t.reduce(0) { $0 + $1[keyPath: key] } / Double(t.reduce(0) { $0 + $1.samples })
        }
        let covered = "\(min(o.runs, timedEvery) * randomBatches.count / timedEvery) of \(randomBatches.count) micro-batches"
        for (name, other) in [("length-aware", aware), ("length-aware + grouped", groupedTally)] {
            add("speed-up, \(name), all rounds (\(covered))", "x", Samples([total(padded, \.wall) / total(other, \.wall)]))
            add("speed-up, \(name), all rounds, CPU time", "x", Samples([total(padded, \.cpu) / total(other, \.cpu)]))
        }
        // What the FLOPs allow: the epoch's micro-batches as the engine computes them (FlopCount, as `coordinator plan`).
        func flopsPerSample(_ set: [[Int]], padTo: Int?, rowsEach: Int = b) -> Double {
            set.reduce(0) { sum, rowsHere in
                sum + FlopCount.microBatch(language: shape.language, vision: shape.vision, fuser: model.config, rows: rowsEach,
                                           longest: padTo ?? Int(rowsHere.map { lengths[$0] }.max()!),
                                           labelRows: rowsEach * shape.labelTokens)
            } / Double(set.count * rowsEach)
        }
        let flopsPadded = flopsPerSample(randomBatches, padTo: longest)
        let flopsAware = flopsPerSample(randomBatches, padTo: nil), flopsGrouped = flopsPerSample(groupedBatches, padTo: nil)
        // No padding at all (every row computed alone at its own length): the most any padding scheme can give.
        let flopsUnpadded = flopsPerSample((0..<rows).map { [$0] }, padTo: nil, rowsEach: 1)
        report.note(String(format: "FLOPs per sample over the epoch: padded %.2f G, length-aware %.2f G (%.2fx), "
                           + "grouped %.2f G (%.2fx); no padding at all %.2f G (%.2fx)", flopsPadded / 1e9, flopsAware / 1e9,
                           flopsPadded / flopsAware, flopsGrouped / 1e9, flopsPadded / flopsGrouped, flopsUnpadded / 1e9,
                           flopsPadded / flopsUnpadded))
        let mean = Double(lengths.reduce(0) { $0 + Int($1) }) / Double(rows)
        func tokens(_ set: [[Int]]) -> Double { Double(set.reduce(0) { $0 + b * Int($1.map { lengths[$0] }.max()!) }) / Double(rows) }
        report.note(String(format: "mean row length %.0f of %d; tokens computed per sample over the epoch: padded %d, "
                           + "length-aware %.0f, grouped %.0f", mean, longest, longest, tokens(randomBatches), tokens(groupedBatches)))
    }
}
