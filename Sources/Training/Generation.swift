import Foundation
import Model
import Shard

extension TrainingEngine {
    /// Greedy captions for samples `indices` of `dataset`: each row's prompt (its tokens before the
    /// first label) is continued one argmax token at a time, up to `maxNewTokens` or `eos`, dropout off
    /// (``DEHVFModel/greedy(_:params:maxNewTokens:eos:pad:cache:observe:)``). The generated tokens take
    /// the answer's place, so the router's prompt mean covers the prompt only, as in training. Returns the
    /// generated ids per sample (with the `eos` that ended it).
    ///
    /// With `cache` (the default, and what `coordinator eval --generate` runs on every worker) the prompts
    /// run once: each layer's keys and values and the fuser's visual memory are kept, a step computes one
    /// position per unfinished row, and rows that reached `eos` drop out. `cache: false` re-runs every
    /// row's whole prefix each step; it gives the same ids and is kept as the reference the tests and
    /// `bench generate` compare against. `observe` sees each step's logits of the unfinished rows.
    public func generate(_ dataset: DatasetFile, indices: [Int], params: TensorSet, maxNewTokens: Int,
                         eos: Int32?, cache: Bool = true,
                         observe: ((_ rows: [Int], _ logits: Tensor) -> Void)? = nil) throws -> [[Int32]] {
        let (batch, _) = try self.batch(dataset, indices: indices)
        let t = batch.tokens, pad = dataset.padID
        var lengths: [Int32] = []
        for b in 0..<batch.batch {
            let row = b * t, length = Int(batch.lengths[b])
            let firstLabel: Int = (0..<t).first(where: { batch.labels[row + $0] != -100 }) ?? length
            lengths.append(Int32(max(1, Swift.min(firstLabel, length))))
        }
        let width = Int(lengths.max() ?? 1)
        var ids = [Int32](repeating: pad, count: batch.batch * width)
        for (b, length) in lengths.enumerated() {
            let prompt = batch.inputIDs[(b * t)..<(b * t + Int(length))]
            ids.replaceSubrange((b * width)..<(b * width + prompt.count), with: prompt)
        }
        let prompts = TrainingBatch(tokens: width, inputIDs: ids, labels: [Int32](repeating: -100, count: ids.count),
                                    lengths: lengths, sampleIndices: batch.sampleIndices, features: batch.features)
        return try model.greedy(prompts, params: params, maxNewTokens: maxNewTokens, eos: eos, pad: pad, cache: cache,
                                observe: observe)
    }
}
