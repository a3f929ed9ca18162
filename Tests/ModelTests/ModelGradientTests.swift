import Foundation
import Model
import TestSupport
import Testing

/// Every trainable tensor of the whole model — features, fuser, the frozen LLaMA's forward and backward,
/// the loss — against central finite differences of the DESIGN.md loss, in all three modes, on
/// perturbed parameters (at initialisation router.weight is zero and hides the prompt-mean path).
@Suite("whole-model gradients against finite differences")
struct ModelGradientTests {
    static func model(_ mode: FusionMode) throws -> (DEHVFModel, TensorSet, TrainingBatch) {
        let vc = CLIPVisionConfig(hiddenSize: 8, intermediateSize: 16, numHiddenLayers: 3, numAttentionHeads: 2,
                                  imageSize: 8, patchSize: 4)
        let lc = LlamaConfig(hiddenSize: 8, intermediateSize: 12, numHiddenLayers: 2, numAttentionHeads: 2,
                             numKeyValueHeads: 1, vocabSize: 12)
        let vision = try CLIPVisionModel(config: vc, weights: try VisionBackboneDirectory.towerWeights(
            InMemoryWeights(RandomBackbone.clipVision(vc, seed: 1).tensors)))
        let llama = try LlamaModel(config: lc, weights: InMemoryWeights(
            RandomBackbone.llama(lc, seed: 2, weightScale: 20).tensors))
        let config = FuserConfig(fusion: mode, visionLayers: mode == .dehvf ? [1, 2, 3] : nil, projectorRank: 4,
                                     visualTokens: 0, featureScale: 0.8, injectionScale: 1.5, dropout: 0.2,
                                     vision: vc, language: lc)
        let params = config.initialParameters(seed: 3)
        var rng = InitRNG(seed: 4, name: "perturb")
        for t in params.tensors { for i in 0..<t.count { t.data[i] += 0.4 * rng.normal() } }
        let pixels = Tensor(zeros: [3, 3, 8, 8])
        for i in 0..<pixels.count { pixels.data[i] = rng.normal() }
        let feats = try vision.candidates(pixels: pixels, for: config)
        // Three samples of 6 tokens: one without an image, one padded, answers of one and two tokens.
        let ids: [Int32] = [1, 3, 4, 5, 6, 7, /**/ 1, 8, 9, 10, 0, 0, /**/ 1, 4, 4, 2, 11, 3]
        let labels: [Int32] = [-100, -100, -100, -100, 6, 7, /**/ -100, -100, -100, 10, -100, -100, /**/ -100, -100, -100, -100, 11, -100]
        let batch = TrainingBatch(tokens: 6, inputIDs: ids, labels: labels, lengths: [6, 4, 6], sampleIndices: [5, 9, 2],
                                  features: [feats[0], feats[1], nil])
        return (DEHVFModel(llama: llama, config: config, initial: params), params, batch)
    }

    @Test("every trainable tensor", arguments: FusionMode.allCases)
    func matches(mode: FusionMode) throws {
        let (model, params, batch) = try Self.model(mode)
        let mask = DropoutMask(p: 0.2, seed: 7, step: 3)
        let analytic = try model.gradients(batch, params: params, dropout: mask)
        // The loss with the same dropout masks: gradients() of a copy, whose lossSum is the forward value.
        func loss() throws -> Double { try model.gradients(batch, params: params, dropout: mask).lossSum }
        // Float32 through 2 layers with x20 weights; step 1e-2 balances truncation (~1e-4) and rounding
        // (~1e-5 / h); 1e-2 relative to the tensor's largest gradient still fails a wrong or missing term.
        let h: Float = 1e-2
        for (name, value) in zip(params.names, params.tensors) {
            let grad = analytic.grads[name]!
            var worst = 0.0, scale = 1e-6
            for i in 0..<value.count { scale = max(scale, abs(Double(grad.data[i]))) }
            for i in stride(from: 0, to: value.count, by: max(1, value.count / 24)) {
                let old = value.data[i]
                value.data[i] = old + h; let up = try loss()
                value.data[i] = old - h; let down = try loss()
                value.data[i] = old
                worst = max(worst, abs((up - down) / Double(2 * h) - Double(grad.data[i])))
            }
            #expect(scale > 1e-4, "\(mode) \(name): the gradient is ~0, so this proves nothing")
            #expect(worst / scale < 1e-2, "\(mode) \(name): max error \(worst), gradient scale \(scale)")
        }
    }

    /// The batch padded with `extra` more positions (pad id 0, label -100) per row.
    static func padded(_ b: TrainingBatch, by extra: Int) -> TrainingBatch {
        var ids: [Int32] = [], labels: [Int32] = []
        for r in 0..<b.batch {
            ids += b.inputIDs[(r * b.tokens)..<((r + 1) * b.tokens)] + [Int32](repeating: 0, count: extra)
            labels += b.labels[(r * b.tokens)..<((r + 1) * b.tokens)] + [Int32](repeating: -100, count: extra)
        }
        return TrainingBatch(tokens: b.tokens + extra, inputIDs: ids, labels: labels, lengths: b.lengths,
                             sampleIndices: b.sampleIndices, features: b.features)
    }

    @Test("one model reused across micro-batch lengths gives a fresh model's bits; padding beyond the rows changes at most the rounding", arguments: FusionMode.allCases)
    func lengthInvariance(mode: FusionMode) throws {
        let (model, params, batch) = try Self.model(mode)
        let mask = DropoutMask(p: 0.2, seed: 7, step: 3)
        let short = try model.gradients(batch, params: params, dropout: mask)
        // The same model (its workspaces grown, then reused at a shorter length) at the padded length...
        let long = try model.gradients(Self.padded(batch, by: 9), params: params, dropout: mask)
        // ...and back at the short one, after the long call left its data in the buffers.
        let again = try model.gradients(batch, params: params, dropout: mask)
        let (fresh, _, _) = try Self.model(mode)
        let reference = try fresh.gradients(batch, params: params, dropout: mask)
        #expect(short == reference, "\(mode): a model's first call differs from a fresh model's")
        #expect(again == reference, "\(mode): a workspace reused after a longer micro-batch changed the result")
        // Padding changes GEMM shapes, so the last bits may move (sgemm's tails depend on the inner
        // dimension); the values may not: within float32 rounding of sums of ~20 terms.
        #expect(long.lossSum == reference.lossSum && long.labelCount == reference.labelCount)
        for (a, b) in zip(long.grads.tensors, reference.grads.tensors) {
            let scale = b.array.map(abs).max() ?? 0
            #expect(maxAbsDiff(a.array, b.array) <= 1e-5 * max(scale, 1e-3), "\(mode): padding changed a gradient beyond rounding")
        }
    }
}
