import Foundation
import Model
import Shard

extension TrainingEngine {
    /// Greedy captions for samples `indices` of `dataset`: each row's prompt (its tokens before the
    /// first label) is continued one argmax token at a time, up to `maxNewTokens` or `eos`, dropout off.
    /// The generated tokens are marked as labels, so the router's prompt mean covers the prompt only, as
    /// in training. Returns the generated ids per sample (with the `eos` that ended it). Every step re-runs the whole
    /// prefix (no key/value cache): meant for held-out sets of a few thousand captions.
    public func generate(_ dataset: DatasetFile, indices: [Int], params: TensorSet, maxNewTokens: Int,
                         eos: Int32?) throws -> [[Int32]] {
        let (batch, _) = try self.batch(dataset, indices: indices)
        let t = batch.tokens, pad = dataset.padID
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
}
