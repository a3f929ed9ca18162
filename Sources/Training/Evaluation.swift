import Cluster
import Foundation
import Model
import Shard

/// Held-out results: multiple-choice accuracy (overall and per ScienceQA category when the dataset has
/// `meta/*`), or the caption loss.
public struct EvalReport: Codable, Sendable {
    public struct Bucket: Codable, Sendable {
        public var correct: Int
        public var total: Int
        public var accuracy: Double { total == 0 ? 0 : Double(correct) / Double(total) }
        enum CodingKeys: String, CodingKey { case correct, total, accuracy }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(correct, forKey: .correct)
            try c.encode(total, forKey: .total)
            try c.encode(accuracy, forKey: .accuracy)
        }
        public init(correct: Int = 0, total: Int = 0) { self.correct = correct; self.total = total }
        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            correct = try c.decode(Int.self, forKey: .correct)
            total = try c.decode(Int.self, forKey: .total)
        }
    }
    public var dataset: String
    public var task: String
    public var samples: Int
    /// Multiple choice: overall.
    public var overall: Bucket?
    /// ScienceQA categories, in the paper's order (NAT, SOC, LAN, TXT, IMG, NO, G1-6, G7-12).
    public var categories: [String: Bucket]
    /// Mean token loss (both tasks).
    public var loss: Double

    public static let categoryNames = [("subject", ["NAT", "SOC", "LAN"]), ("context", ["TXT", "IMG", "NO"]),
                                       ("grade", ["G1-6", "G7-12"])]

    /// The report as the console shows it: accuracy and the ScienceQA categories, or the caption loss.
    public var summary: String {
        var lines: [String] = []
        if let o = overall {
            lines.append(String(format: "accuracy %.2f%% (%d/%d) on %@, mean token loss %.4f", 100 * o.accuracy, o.correct, o.total,
                                dataset, loss))
            var row: [String] = []
            for (_, names) in Self.categoryNames {
                for n in names { if let b = categories[n] { row.append(String(format: "%@ %.2f%% (%d)", n, 100 * b.accuracy, b.total)) } }
            }
            if !row.isEmpty { lines.append("  " + row.joined(separator: "  ")) }
        } else {
            lines.append(String(format: "mean token loss %.4f (perplexity %.2f) on %@ (%d samples)", loss, exp(loss), dataset, samples))
        }
        return lines.joined(separator: "\n")
    }
}

extension EvalReport {
    /// An evaluation's units: consecutive runs of `size` rows of a `rows`-row dataset. They are the same
    /// wherever the evaluation runs, so every figure is too (a unit is computed at its own longest row).
    public static func units(rows: Int, size: Int) -> [[Int]] {
        stride(from: 0, to: rows, by: max(1, size)).map { Array($0..<Swift.min($0 + max(1, size), rows)) }
    }

    /// The report of `dataset` from its units' results (one per unit, in unit order), computed in this
    /// process or on workers: loss sums added exactly (``ExactSum/sumDoubles(_:)``, so the mean does not
    /// depend on who computed what), each prediction checked against the row's answer and ScienceQA
    /// categories read here.
    public init(dataset: DatasetFile, units: [[Int]], results: [EvalResult]) throws {
        guard results.count == units.count else {
            throw ShardError(.badShape, "evaluation results do not match its units", path: dataset.path,
                             expected: "\(units.count) results", found: "\(results.count)")
        }
        self.init(dataset: dataset.path, task: dataset.task.rawValue, samples: units.reduce(0) { $0 + $1.count },
                  overall: nil, categories: [:], loss: 0)
        let labels = results.reduce(Int64(0)) { $0 + $1.labelCount }
        loss = labels == 0 ? 0 : ExactSum.sumDoubles(results.map(\.lossSum)) / Double(labels)
        guard dataset.task == .multipleChoice else { return }
        var overall = Bucket()
        for (unit, r) in zip(units, results) {
            let mb = try dataset.readBatch(indices: unit, images: false)
            guard let answers = mb.answer, let counts = mb.numChoices, r.predictions.count == unit.count else {
                throw ShardError(.badShape, "unit \(r.unit) has \(r.predictions.count) predictions for \(unit.count) rows",
                                 path: dataset.path)
            }
            for i in unit.indices {
                guard (0..<counts[i]).contains(r.predictions[i]) else {
                    throw ShardError(.badValue, "prediction for row \(unit[i]) is not one of its choices", path: dataset.path,
                                     expected: "0..<\(counts[i])", found: "\(r.predictions[i])")
                }
                let right = r.predictions[i] == answers[i] ? 1 : 0
                overall.correct += right
                overall.total += 1
                for (field, values) in [("subject", mb.subject), ("context", mb.context), ("grade", mb.grade)] {
                    guard let values, let names = Self.categoryNames.first(where: { $0.0 == field })?.1,
                          Int(values[i]) < names.count else { continue }
                    categories[names[Int(values[i])], default: .init()].correct += right
                    categories[names[Int(values[i])], default: .init()].total += 1
                }
            }
        }
        self.overall = overall
    }

    /// The figure `metric` ranks by, and whether `other` beats `self` on it.
    public func value(_ metric: BestMetric) -> Double? {
        switch metric {
        case .none: nil
        case .accuracy: overall?.accuracy
        case .loss: loss
        }
    }
}

extension BestMetric {
    /// Whether `candidate` is better than `incumbent` (ties keep the incumbent: the earlier checkpoint).
    public func improves(_ candidate: Double, on incumbent: Double?) -> Bool {
        guard let incumbent else { return true }
        switch self {
        case .none: return false
        case .accuracy: return candidate > incumbent
        case .loss: return candidate < incumbent
        }
    }
}

extension TrainingEngine {
    /// One evaluation unit: rows `indices` of `dataset` scored with `params` in one forward pass,
    /// dropout off (the loss sum and label count, each multiple-choice row's predicted choice, the argmax
    /// over its first num_choices letters); with `maxNewTokens` > 0 each row is also captioned greedily.
    public func evaluate(unit: UInt32, _ dataset: DatasetFile, indices: [Int], params: TensorSet, maxNewTokens: Int = 0,
                         eos: Int32? = nil) throws -> EvalResult {
        try evaluateWithLogits(unit: unit, dataset, indices: indices, params: params, maxNewTokens: maxNewTokens, eos: eos).result
    }

    /// ``evaluate(unit:_:indices:params:maxNewTokens:eos:)`` that also returns each row's logits of the
    /// dataset's choice letters ([rows][C], empty for caption data), the figures predictions come from.
    public func evaluateWithLogits(unit: UInt32, _ dataset: DatasetFile, indices: [Int], params: TensorSet, maxNewTokens: Int = 0,
                                   eos: Int32? = nil) throws -> (result: EvalResult, choiceLogits: [[Float]]) {
        let start = monotonicMillis()
        let (batch, mb) = try self.batch(dataset, indices: indices)
        let choices = dataset.task == .multipleChoice ? dataset.choiceTokenIDs : nil
        if choices != nil, mb.answerPosition == nil || mb.numChoices == nil {
            throw ShardError(.badShape, "multiple-choice data without answer_position or num_choices", path: dataset.path)
        }
        let s = try model.score(batch, params: params, answerPositions: choices == nil ? nil : mb.answerPosition,
                                choiceTokenIDs: choices ?? [])
        var predictions = [Int32](repeating: -1, count: indices.count)
        if let counts = mb.numChoices, choices != nil {
            for (i, row) in s.choiceLogits.enumerated() {
                let n = max(1, min(Int(counts[i]), row.count))
                predictions[i] = Int32((0..<n).max { row[$0] < row[$1] }!)
            }
        }
        let generated = maxNewTokens > 0
            ? try generate(dataset, indices: indices, params: params, maxNewTokens: maxNewTokens, eos: eos) : []
        let result = EvalResult(unit: unit, lossSum: s.lossSum, labelCount: Int64(s.labelCount), predictions: predictions,
                                generated: generated, computeSeconds: Double(monotonicMillis() - start) / 1000)
        return (result, s.choiceLogits)
    }

    /// Scores every row of `dataset` here, `unitSize` rows at a time (``EvalReport/units(rows:size:)``):
    /// the same figures a distributed evaluation with the same unit size reports.
    public func evaluate(_ dataset: DatasetFile, params: TensorSet, unitSize: Int,
                         progress: (Int, Int) -> Void = { _, _ in }) throws -> EvalReport {
        let units = EvalReport.units(rows: dataset.count, size: unitSize)
        var results: [EvalResult] = []
        var done = 0
        for (u, unit) in units.enumerated() {
            results.append(try evaluate(unit: UInt32(u), dataset, indices: unit, params: params))
            done += unit.count
            progress(done, dataset.count)
        }
        return try EvalReport(dataset: dataset, units: units, results: results)
    }
}
