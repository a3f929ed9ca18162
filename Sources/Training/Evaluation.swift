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

extension TrainingEngine {
    /// Scores every sample of `dataset` with `params`, dropout off, `batchSize` samples at a time.
    public func evaluate(_ dataset: DatasetFile, params: TensorSet, batchSize: Int = 32,
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
            if dataset.task == .multipleChoice, let choices = dataset.choiceTokenIDs, let positions = mb.answerPosition,
               let answers = mb.answer, let counts = mb.numChoices {
                let logits = try model.choiceLogits(batch, params: params, answerPositions: positions, choiceTokenIDs: choices)
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
