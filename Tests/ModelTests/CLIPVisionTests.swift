import Model
import TestSupport
import Testing

func randomCLIPWeights(_ c: CLIPVisionConfig, prefix p: String, seed: UInt64) -> [String: Tensor] {
    var rng = TestRNG(seed)
    let D = c.hiddenSize, I = c.intermediateSize, ps = c.patchSize
    var w: [String: Tensor] = [
        p + "embeddings.patch_embedding.weight": rng.tensor([D, c.numChannels, ps, ps], 0.3),
        p + "embeddings.class_embedding": rng.tensor([D]),
        p + "embeddings.position_embedding.weight": rng.tensor([c.numPatches + 1, D], 0.5),
        p + "pre_layrnorm.weight": Tensor(shape: [D], values: rng.array(D, 0.2).map { $0 + 1 }),
        p + "pre_layrnorm.bias": rng.tensor([D], 0.1),
        p + "post_layernorm.weight": Tensor(shape: [D], values: rng.array(D, 0.2).map { $0 + 1 }),
        p + "post_layernorm.bias": rng.tensor([D], 0.1),
    ]
    for l in 0..<c.numHiddenLayers {
        let q = "\(p)encoder.layers.\(l)."
        for n in ["layer_norm1", "layer_norm2"] {
            w[q + n + ".weight"] = Tensor(shape: [D], values: rng.array(D, 0.2).map { $0 + 1 })
            w[q + n + ".bias"] = rng.tensor([D], 0.1)
        }
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            w[q + "self_attn.\(n).weight"] = rng.tensor([D, D], 0.4)
            w[q + "self_attn.\(n).bias"] = rng.tensor([D], 0.1)
        }
        w[q + "mlp.fc1.weight"] = rng.tensor([I, D], 0.4)
        w[q + "mlp.fc1.bias"] = rng.tensor([I], 0.1)
        w[q + "mlp.fc2.weight"] = rng.tensor([D, I], 0.3)
        w[q + "mlp.fc2.bias"] = rng.tensor([D], 0.1)
    }
    return w
}

@Suite("CLIP vision") struct CLIPVisionTests {
    // 1e-4 absolute: float32 GEMM sums of ≤ 48 O(1) terms and LayerNorms on O(1) activations carry
    // ~1e-6 error per op; two layers stay well below 1e-4, while any wrong index or term is O(0.1).
    @Test("all hidden states and post_layernorm match the naive reference", arguments: [
        ("vision_model.", "quick_gelu"), ("", "gelu"),
    ])
    func forward(prefix: String, act: String) throws {
        let c = CLIPVisionConfig(hiddenSize: 12, intermediateSize: 20, numHiddenLayers: 2, numAttentionHeads: 3,
                                 imageSize: 8, patchSize: 4, hiddenAct: act)
        var w = randomCLIPWeights(c, prefix: prefix, seed: 21)
        // A full CLIPModel's extras and the position_ids buffer are ignored.
        w[prefix + "embeddings.position_ids"] = Tensor(zeros: [1, 5])
        if prefix == "vision_model." {
            w["text_model.embeddings.token_embedding.weight"] = Tensor(zeros: [3, 2])
            w["visual_projection.weight"] = Tensor(zeros: [4, 12])
            w["logit_scale"] = Tensor(zeros: [])
        }
        let model = try CLIPVisionModel(config: c, weights: try VisionBackboneDirectory.towerWeights(InMemoryWeights(w)))
        var rng = TestRNG(22)
        let pixels = rng.tensor([2, 3, 8, 8], 2)
        let states = try model.forward(pixelValues: pixels)
        let ref = naiveCLIP(w, prefix: prefix, c, pixels: pixels)
        #expect(states.count == 3)
        for j in 0..<3 {
            #expect(states[j].shape == [2, 5, 12])
            #expect(maxAbsDiffD(states[j].array, ref[j]) < 1e-4)
        }
        let post = model.postLayerNorm(states[1])
        let refPost = naiveLayerNorm(ref[1], dim: 12, d(w[prefix + "post_layernorm.weight"]!), d(w[prefix + "post_layernorm.bias"]!), eps: 1e-5)
        #expect(maxAbsDiffD(post.array, refPost) < 1e-4)
    }

    @Test("candidate features drop CLS, apply post_layernorm, and average-pool the patch grid")
    func features() throws {
        // 16x16 image, patch 4: a 4x4 grid; pooling to 4 tokens averages 2x2 windows.
        let c = CLIPVisionConfig(hiddenSize: 12, intermediateSize: 20, numHiddenLayers: 2, numAttentionHeads: 3,
                                 imageSize: 16, patchSize: 4)
        let w = randomCLIPWeights(c, prefix: "", seed: 23)
        let model = try CLIPVisionModel(config: c, weights: try VisionBackboneDirectory.towerWeights(InMemoryWeights(w)))
        var rng = TestRNG(24)
        let pixels = rng.tensor([2, 3, 16, 16])
        let states = try model.forward(pixelValues: pixels)
        let full = try model.candidateFeatures(pixelValues: pixels, layers: [1, 2])
        let pooled = try model.candidateFeatures(pixelValues: pixels, layers: [2], visualTokens: 4)[0]
        let post = model.postLayerNorm(states[2]).array   // [2, 17, 12]
        #expect(full[1].shape == [2, 16, 12])
        #expect(maxAbsDiff(full[1].array, Array(post[12..<(17 * 12)]) + Array(post[(18 * 12)...])) == 0)
        #expect(pooled.shape == [2, 4, 12])
        // Token (1, 0) of image 1 averages grid cells (2,0), (2,1), (3,0), (3,1).
        for ch in 0..<12 {
            let cells = [8, 9, 12, 13].map { post[(17 + 1 + $0) * 12 + ch] }
            #expect(abs(pooled.array[(4 + 2) * 12 + ch] - cells.reduce(0, +) / 4) < 1e-6)
        }
        #expect(throws: ModelError.self) { try model.candidateFeatures(pixelValues: pixels, layers: [1], visualTokens: 9) }
        #expect(throws: ModelError.self) { try model.candidateFeatures(pixelValues: pixels, layers: [3]) }
    }

    @Test("loading is strict: an unknown tensor and a misshapen one throw")
    func strict() {
        let c = CLIPVisionConfig(hiddenSize: 12, intermediateSize: 20, numHiddenLayers: 1, numAttentionHeads: 3,
                                 imageSize: 8, patchSize: 4)
        var w = randomCLIPWeights(c, prefix: "", seed: 1)
        w["encoder.layers.7.mlp.fc1.weight"] = Tensor(zeros: [1])
        #expect(throws: ModelError.self) { try CLIPVisionModel(config: c, weights: try VisionBackboneDirectory.towerWeights(InMemoryWeights(w))) }
        var w2 = randomCLIPWeights(c, prefix: "", seed: 1)
        w2["post_layernorm.bias"] = Tensor(zeros: [11])
        #expect(throws: ModelError.self) { try CLIPVisionModel(config: c, weights: try VisionBackboneDirectory.towerWeights(InMemoryWeights(w2))) }
    }
}
