import Cluster
import Foundation
import Model
import Shard
import TestSupport
import Testing
import Training

/// Greedy captions for caption data: the loop's bookkeeping (prompts, padding, positions, EOS) checked
/// against the model's own next-token argmax.
@Suite("caption generation")
struct CaptionGenerationTests {
    @Test("each generated token is the argmax of the model's next-token logits over the prompt and the tokens before it")
    func greedyIsArgmax() throws {
        // A loud visual memory and perturbed parameters, so the fuser's part of the logits is not negligible.
        let (engine, params) = try DemoFixture.loudEngine(data: try DemoFixture.captions())
        let indices = [0, 3, 5, 9]
        let eos = DemoTask.id("square")   // a token the model does produce, so stopping at EOS is exercised
        let captions = try engine.generate(engine.train, indices: indices, params: params, maxNewTokens: 6, eos: eos)
        #expect(captions.count == indices.count)
        let (batch, _) = try engine.batch(engine.train, indices: indices)
        for (b, generated) in captions.enumerated() {
            #expect(!generated.isEmpty && generated.count <= 6)
            if let e = generated.firstIndex(of: eos) { #expect(e == generated.count - 1, "nothing follows the EOS") }
            // Re-score prompt + generated as one row (the generated part labelled, so the router averages the
            // prompt only): each generated token must be the argmax at the position before it.
            let p = 5   // "<bos> what is shown ?"
            let prompt = Array(batch.inputIDs[(b * batch.tokens)..<(b * batch.tokens + p)])
            let full = prompt + generated
            let labels = [Int32](repeating: -100, count: p) + generated
            for j in 0..<generated.count {
                let width = full.count
                let one = TrainingBatch(tokens: width, inputIDs: full, labels: labels,
                                        lengths: [Int32(p + j)], sampleIndices: [indices[b]], features: [batch.features[b]])
                let logits = try engine.model.nextTokenLogits(one, params: params, positions: [p + j - 1])
                let v = logits.shape[1]
                let best = (0..<v).max { logits.data[$0] < logits.data[$1] }!
                #expect(Int32(best) == generated[j], "sample \(indices[b]) token \(j)")
            }
        }
    }
}
