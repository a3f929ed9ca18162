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
}

extension TrainingEngine {
    /// Greedy captions for samples `indices` of `dataset`: each row's prompt (its tokens before the
    /// first label) is continued one argmax token at a time, up to `maxNewTokens` or `eos`, dropout off.
    /// The generated tokens are marked as labels, so the router's prompt mean covers the prompt only, as
    /// in training. Returns the generated ids per sample (with the `eos` that ended it). Every step re-runs the whole
    /// prefix (no key/value cache): meant for held-out sets of a few thousand captions.
    public func generate(_ dataset: DatasetFile, indices: [Int], params: ParameterSet, maxNewTokens: Int,
                         eos: Int32?) throws -> [[Int32]] {
        let (batch, _) = try self.batch(dataset, indices: indices)
        let t = batch.tokens, pad = dataset.padId
        var sequences: [[Int32]] = []
        for b in 0..<batch.batch {
            let row = b * t, length = Int(batch.lengths[b])
            let firstLabel: Int = (0..<t).first(where: { batch.labels[row + $0] != -100 }) ?? length
            sequences.append(Array(batch.inputIDs[row..<(row + max(1, Swift.min(firstLabel, length)))]))
        }
        let promptLengths = sequences.map(\.count)
        var done = [Bool](repeating: false, count: batch.batch)
        for _ in 0..<maxNewTokens where done.contains(false) {
            let width = sequences.map(\.count).max()!
            var ids = [Int32](repeating: pad, count: batch.batch * width)
            var labels = [Int32](repeating: -100, count: ids.count)
            for (b, s) in sequences.enumerated() {
                ids.replaceSubrange((b * width)..<(b * width + s.count), with: s)
                for j in promptLengths[b]..<s.count { labels[b * width + j] = s[j] }
            }
            let step = TrainingBatch(tokens: width, inputIDs: ids, labels: labels,
                                     lengths: sequences.map { Int32($0.count) }, sampleIndices: batch.sampleIndices,
                                     features: batch.features)
            let logits = try model.nextTokenLogits(step, params: params, positions: sequences.map { $0.count - 1 })
            let v = logits.shape[1]
            for b in 0..<batch.batch where !done[b] {
                let row = logits.data + b * v
                var best = 0
                for j in 1..<v where row[j] > row[best] { best = j }
                sequences[b].append(Int32(best))
                if Int32(best) == eos { done[b] = true }
            }
        }
        return zip(sequences, promptLengths).map { Array($0.0[$0.1...]) }
    }

    /// Scores every sample of `dataset` with `params`, dropout off, `batchSize` samples at a time.
    public func evaluate(_ dataset: DatasetFile, params: ParameterSet, batchSize: Int = 32,
                         progress: (Int, Int) -> Void = { _, _ in }) throws -> EvalReport {
        var report = EvalReport(dataset: dataset.path, task: dataset.task.rawValue, samples: dataset.count,
                                overall: nil, categories: [:], loss: 0)
        var lossSum = 0.0, labels = 0
        var overall = EvalReport.Bucket()
        var start = 0
        while start < dataset.count {
            let indices = Array(start..<min(start + batchSize, dataset.count))
            let (batch, mb) = try self.batch(dataset, indices: indices)
            let l = try model.loss(batch, params: params)
            lossSum += l.lossSum
            labels += l.labelCount
            if dataset.task == .multipleChoice, let choices = dataset.choiceTokenIds, let positions = mb.answerPosition,
               let answers = mb.answer, let counts = mb.numChoices {
                let logits = try model.choiceLogits(batch, params: params, answerPositions: positions, choiceIDs: choices)
                for (i, row) in logits.enumerated() {
                    let n = max(1, min(Int(counts[i]), row.count))
                    let predicted = (0..<n).max { row[$0] < row[$1] }!
                    let right = predicted == Int(answers[i]) ? 1 : 0
                    overall.correct += right
                    overall.total += 1
                    for (field, values) in [("subject", mb.subject), ("context", mb.context), ("grade", mb.grade)] {
                        guard let values, let names = EvalReport.categoryNames.first(where: { $0.0 == field })?.1,
                              Int(values[i]) < names.count else { continue }
                        report.categories[names[Int(values[i])], default: .init()].correct += right
                        report.categories[names[Int(values[i])], default: .init()].total += 1
                    }
                }
            }
            start += batchSize
            progress(min(start, dataset.count), dataset.count)
        }
        if dataset.task == .multipleChoice { report.overall = overall }
        report.loss = labels == 0 ? 0 : lossSum / Double(labels)
        return report
    }
}
