import Foundation
import Model
import TestSupport
import Testing

/// Cached greedy decoding (`DEHVFModel.greedy`) against re-running the prefix, on a small random LLaMA
/// with grouped-query attention (4 query heads over 2 key/value heads) and each rope type, in every
/// fusion mode, with prompts of different lengths and a sample without an image.
@Suite("key/value cache decoding")
struct KVCacheTests {
    static let vision = CLIPVisionConfig(hiddenSize: 6, intermediateSize: 8, numHiddenLayers: 4, numAttentionHeads: 2,
                                         imageSize: 8, patchSize: 4)
    static let promptLengths: [Int32] = [3, 7, 1, 5]
    static let newTokens = 9

    static func language(_ scaling: RopeScaling, maxPositions: Int = 2048) -> LlamaConfig {
        LlamaConfig(hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 3, numAttentionHeads: 4, numKeyValueHeads: 2,
                    vocabSize: 40, ropeScaling: scaling, maxPositionEmbeddings: maxPositions)
    }

    /// The model, perturbed parameters (router.weight starts at zero) and the prompts; sample 2 has no image.
    static func setup(_ mode: FusionMode, _ language: LlamaConfig) throws -> (DEHVFModel, TensorSet, TrainingBatch) {
        let llama = try LlamaModel(config: language,
                                   weights: InMemoryWeights(RandomBackbone.llama(language, seed: 5, weightScale: 10).tensors))
        let config = FuserConfig(fusion: mode, projectorRank: 6, featureScale: 0.5, injectionScale: 2, dropout: 0.1,
                                 vision: vision, language: language)
        let params = config.initialParameters(seed: 3)
        var rng = InitRNG(seed: 9, name: "perturb")
        for t in params.tensors { for i in 0..<t.count { t.data[i] += 0.3 * rng.normal() } }
        let b = promptLengths.count, t = Int(promptLengths.max()!)
        var ids = [Int32](repeating: 0, count: b * t)
        for i in 0..<b { for j in 0..<Int(promptLengths[i]) { ids[i * t + j] = Int32(1 + (i * 11 + j * 7) % 39) } }
        let features: [Tensor?] = (0..<b).map { i in
            guard i != 2 else { return nil }
            let f = Tensor(zeros: [config.candidates, config.visualTokens, vision.hiddenSize])
            for k in 0..<f.count { f.data[k] = rng.normal() }
            return f
        }
        let prompts = TrainingBatch(tokens: t, inputIDs: ids, labels: [Int32](repeating: -100, count: ids.count),
                                    lengths: promptLengths, sampleIndices: Array(0..<b), features: features)
        return (DEHVFModel(llama: llama, config: config, initial: params), params, prompts)
    }

    /// Generates with and without the cache; expects equal ids and each step's logits equal to float
    /// rounding (the same sums in another order: one-row products against row blocks). Returns the ids.
    @discardableResult
    static func compare(_ mode: FusionMode, _ language: LlamaConfig, eos: Int32? = nil) throws -> [[Int32]] {
        let (model, params, prompts) = try setup(mode, language)
        var cached: [[Float]] = [], uncached: [[Float]] = []
        let a = try model.greedy(prompts, params: params, maxNewTokens: newTokens, eos: eos, pad: 0, cache: true) { _, l in cached.append(l.array) }
        let b = try model.greedy(prompts, params: params, maxNewTokens: newTokens, eos: eos, pad: 0, cache: false) { _, l in uncached.append(l.array) }
        #expect(a == b, "\(mode), rope \(language.ropeScaling.typeName)")
        #expect(cached.count == uncached.count)
        for (step, (x, y)) in zip(cached, uncached).enumerated() {
            let scale = y.map(abs).max()!, worst = zip(x, y).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-4 * scale, "\(mode), rope \(language.ropeScaling.typeName), step \(step): \(worst) at scale \(scale)")
        }
        return a
    }

    @Test("cached == uncached with GQA for every rope type within max_position_embeddings, in every mode", arguments: FusionMode.allCases)
    func ropeTypes(_ mode: FusionMode) throws {
        let scalings: [RopeScaling] = [.none, .linear(factor: 2), .dynamic(factor: 2),
                                       .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16)]
        for scaling in scalings {
            let ids = try Self.compare(mode, Self.language(scaling))
            #expect(Set(ids).count > 1, "rows differ: prompts and images matter")
        }
    }

    @Test("dynamic NTK past max_position_embeddings: steps whose call length changes the frequencies re-run the prefix, same ids",
          arguments: FusionMode.allCases)
    func dynamicPastTheLimit(_ mode: FusionMode) throws {
        // The longest prompt is 7 tokens (+ 4 visual positions in concat); 9 new tokens take the call to 15 (19):
        // the limit is crossed mid-generation, after some steps have run from the cache.
        let limit = mode == .concat ? 14 : 10
        let language = Self.language(.dynamic(factor: 2), maxPositions: limit)
        try Self.compare(mode, language)
        // The frequencies do change past the limit (a cache reused blindly there would be stale).
        let llama = try LlamaModel(config: language, weights: InMemoryWeights(RandomBackbone.llama(language, seed: 5, weightScale: 10).tensors))
        let cache = KVCache(config: language, batch: 1, capacity: limit + 1)
        _ = try llama.forward(embeddings: Tensor(zeros: [1, limit, 32]), workspace: llama.makeWorkspace(batch: 1, length: limit, training: false),
                              cache: cache)
        #expect(llama.canDecode(cache, ropeLength: limit))
        #expect(!llama.canDecode(cache, ropeLength: limit + 1))
    }

    @Test("rows finishing at different steps: the same ids as each row alone, and as without the cache")
    func earlyFinish() throws {
        let language = Self.language(.none)
        let free = try Self.compare(.dehvf, language)
        // EOS: the id whose first appearances end rows at the most different steps (ties: the smallest id).
        func endings(_ token: Int32) -> [Int] { free.compactMap { $0.firstIndex(of: token) } }
        let eos = Set(free.joined()).sorted().max { (Set(endings($0)).count, endings($0).count) < (Set(endings($1)).count, endings($1).count) }!
        try #require(Set(endings(eos)).count >= 2, "rows end at different steps")
        let ended = try Self.compare(.dehvf, language, eos: eos)
        let (model, params, prompts) = try Self.setup(.dehvf, language)
        for (b, ids) in ended.enumerated() {
            #expect(ids == free[b].firstIndex(of: eos).map { Array(free[b][...$0]) } ?? free[b], "row \(b)")
            let t = prompts.tokens
            let alone = TrainingBatch(tokens: t, inputIDs: Array(prompts.inputIDs[(b * t)..<((b + 1) * t)]),
                                      labels: [Int32](repeating: -100, count: t), lengths: [prompts.lengths[b]],
                                      sampleIndices: [b], features: [prompts.features[b]])
            #expect(try model.greedy(alone, params: params, maxNewTokens: Self.newTokens, eos: eos, pad: 0) == [ids], "row \(b) alone")
        }
    }

    @Test("a position past max_position_embeddings is the same error with the cache as without")
    func pastTheLimitWithoutDynamic() throws {
        let (model, params, prompts) = try Self.setup(.dehvf, Self.language(.linear(factor: 2), maxPositions: 10))
        for cache in [true, false] {
            #expect(throws: ModelError.self) {
                try model.greedy(prompts, params: params, maxNewTokens: Self.newTokens, eos: nil, pad: 0, cache: cache)
            }
        }
    }
}
