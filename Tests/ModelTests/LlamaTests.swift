import Model
import TestSupport
import Testing

func randomLlamaWeights(_ c: LlamaConfig, seed: UInt64) -> [String: Tensor] {
    var rng = TestRNG(seed)
    let dm = c.hiddenSize, F = c.intermediateSize, qd = c.numAttentionHeads * c.headDim, kd = c.numKeyValueHeads * c.headDim
    func norm() -> Tensor { Tensor(shape: [dm], values: rng.array(dm, 0.2).map { $0 + 1 }) }
    var w: [String: Tensor] = ["model.embed_tokens.weight": rng.tensor([c.vocabSize, dm]), "model.norm.weight": norm()]
    if !c.tieWordEmbeddings { w["lm_head.weight"] = rng.tensor([c.vocabSize, dm], 0.3) }
    for l in 0..<c.numHiddenLayers {
        let p = "model.layers.\(l)."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = rng.tensor([qd, dm], 0.5)
        w[p + "self_attn.k_proj.weight"] = rng.tensor([kd, dm], 0.5)
        w[p + "self_attn.v_proj.weight"] = rng.tensor([kd, dm], 0.4)
        w[p + "self_attn.o_proj.weight"] = rng.tensor([dm, qd], 0.3)
        w[p + "mlp.gate_proj.weight"] = rng.tensor([F, dm], 0.4)
        w[p + "mlp.up_proj.weight"] = rng.tensor([F, dm], 0.4)
        w[p + "mlp.down_proj.weight"] = rng.tensor([dm, F], 0.3)
    }
    return w
}

/// A test injection with a parameter per layer: out += silu(x Pₗᵀ), recording dPₗ.
final class TestInjection: FFNInjection {
    let dim: Int
    var params: [Float]   // [layers, d, d]
    var grads: [Float]
    var calls: [Int] = []
    init(layers: Int, dim: Int, seed: UInt64) {
        self.dim = dim
        var rng = TestRNG(seed)
        params = rng.array(layers * dim * dim, 0.3)
        grads = [Float](repeating: 0, count: params.count)
    }
    var rows = 0
    func forward(layer: Int, x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        var z = [Float](repeating: 0, count: rows * dim)
        params.withUnsafeBufferPointer { p in
            Linear.forward(x: x, rows: rows, inFeatures: dim, weight: p.baseAddress! + layer * dim * dim, bias: nil, outFeatures: dim, y: &z)
        }
        for i in 0..<(rows * dim) { out[i] += Activation.silu.value(z[i]) }
        calls.append(layer)
    }
    func backward(layer: Int, x: UnsafePointer<Float>, dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>) {
        var z = [Float](repeating: 0, count: rows * dim)
        params.withUnsafeBufferPointer { p in
            Linear.forward(x: x, rows: rows, inFeatures: dim, weight: p.baseAddress! + layer * dim * dim, bias: nil, outFeatures: dim, y: &z)
        }
        var dz = z
        Activation.silu.backward(z, dy: dOut, dx: &dz, count: rows * dim)
        params.withUnsafeBufferPointer { p in grads.withUnsafeMutableBufferPointer { g in
            Linear.backward(dy: dz, x: x, rows: rows, inFeatures: dim, weight: p.baseAddress! + layer * dim * dim, outFeatures: dim,
                            dx: dX, accumulate: true, dWeight: g.baseAddress! + layer * dim * dim)
        } }
        calls.append(-1 - layer)
    }
}

@Suite("LLaMA") struct LlamaTests {
    // GQA (4 query heads over 2 key/value heads), head_dim 6 != 16 / 4, untied head.
    static let config = LlamaConfig(hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 2, numAttentionHeads: 4,
                                    numKeyValueHeads: 2, headDim: 6, vocabSize: 11, rmsNormEps: 1e-5, ropeTheta: 500)
    // Batch 0: a masked-out prefix position and right padding; batch 1: all real tokens.
    static let mask: [Float] = [0, 1, 1, 1, 0, 1, 1, 1, 1, 1]
    static let positions: [Int32] = [0, 0, 1, 2, 3, 3, 4, 5, 6, 7]

    // 2e-4 absolute: float32 kernels through two layers on O(1) activations (RMSNorm rescales to O(1)),
    // sums of ≤ 24 terms; expected error ~1e-6, any indexing or convention error is O(0.1).
    @Test("forward (hidden states, logits, selected-row logits) matches the naive reference", arguments: [false, true])
    func forward(tied: Bool) throws {
        var c = LlamaTests.config
        c.tieWordEmbeddings = tied
        var w = randomLlamaWeights(c, seed: 31)
        w["model.rotary_emb.inv_freq"] = Tensor(zeros: [3])
        let model = try LlamaModel(config: c, weights: InMemoryWeights(w))
        var rng = TestRNG(32)
        let emb = rng.tensor([2, 5, 16])
        let maskT = Tensor(shape: [2, 5], values: LlamaTests.mask)
        let ref = naiveLlama(w, c, emb: d(emb), B: 2, T: 5, positions: LlamaTests.positions, mask: LlamaTests.mask)
        for training in [false, true] {
            let ws = model.makeWorkspace(batch: 2, length: 5, training: training)
            let (final, states) = try model.forward(embeddings: emb, positions: LlamaTests.positions, keyMask: maskT,
                                                    workspace: ws, outputHiddenStates: true)
            #expect(states.count == 3)
            for j in 0..<3 { #expect(maxAbsDiffD(states[j].array, ref.states[j]) < 2e-4) }
            #expect(maxAbsDiffD(final.array, ref.states[2]) < 2e-4)
            let logits = model.logits(final)
            #expect(logits.shape == [2, 5, 11])
            #expect(maxAbsDiffD(logits.array, ref.logits) < 2e-4)
            let some = model.logits(final, rows: [7, 2])
            // Not bitwise: sgemm blocks a 2-row product differently from a 10-row one.
            #expect(maxAbsDiff(Array(some.array[0..<11]), Array(logits.array[77..<88])) < 1e-5)
            #expect(maxAbsDiff(Array(some.array[11..<22]), Array(logits.array[22..<33])) < 1e-5)
        }
        // Default positions and no mask: the plain causal LM.
        let ws = model.makeWorkspace(batch: 2, length: 5, training: false)
        let plain = try model.forward(embeddings: emb, workspace: ws).final
        let refPlain = naiveLlama(w, c, emb: d(emb), B: 2, T: 5, positions: [0, 1, 2, 3, 4, 0, 1, 2, 3, 4], mask: nil)
        #expect(maxAbsDiffD(plain.array, refPlain.states[2]) < 2e-4)
    }

    @Test("embed looks up rows and rejects ids outside the vocabulary")
    func embed() throws {
        let c = LlamaTests.config
        let w = randomLlamaWeights(c, seed: 33)
        let model = try LlamaModel(config: c, weights: InMemoryWeights(w))
        let e = try model.embed(ids: [3, 10], batch: 1, length: 2)
        #expect(Array(e.array[16..<32]) == Array(w["model.embed_tokens.weight"]!.array[160..<176]))
        #expect(throws: ModelError.self) { try model.embed(ids: [11], batch: 1, length: 1) }
    }

    // Tolerances as in KernelTests (fdStep 1e-2, rtol 1e-2, atol 1e-3): the loss is a double sum over
    // float32 outputs of a 2-layer model with O(1) activations and O(1) gradients.
    @Test("backward with an injection matches finite differences for embeddings and the injection's parameter")
    func backward() throws {
        let c = LlamaTests.config
        let w = randomLlamaWeights(c, seed: 34)
        let model = try LlamaModel(config: c, weights: InMemoryWeights(w))
        var rng = TestRNG(35)
        let emb = rng.array(2 * 5 * 16)
        let wFinal = rng.array(2 * 5 * 16)
        let rows = [3, 6, 9]
        let wLogits = rng.array(rows.count * 11)
        let maskT = Tensor(shape: [2, 5], values: LlamaTests.mask)
        let inj = TestInjection(layers: 2, dim: 16, seed: 36)
        inj.rows = 10
        let ws = model.makeWorkspace(batch: 2, length: 5, training: true)

        // loss = Σ wFinal·final + Σ wLogits·logits[rows]
        func loss(_ e: [Float]) -> Double {
            let (final, _) = try! model.forward(embeddings: Tensor(shape: [2, 5, 16], values: e), positions: LlamaTests.positions,
                                                keyMask: maskT, injection: inj, workspace: ws)
            return weightedSum(final.array, wFinal) + weightedSum(model.logits(final, rows: rows).array, wLogits)
        }
        _ = loss(emb)
        inj.calls = []
        let (final, _) = try model.forward(embeddings: Tensor(shape: [2, 5, 16], values: emb), positions: LlamaTests.positions,
                                           keyMask: maskT, injection: inj, workspace: ws)
        let dFinal = Tensor(shape: [2, 5, 16], values: wFinal)
        model.accumulateLogitGradient(Tensor(shape: [3, 11], values: wLogits), rows: rows, into: dFinal)
        _ = final
        let dEmb = try model.backward(dFinal: dFinal, injection: inj, workspace: ws)
        #expect(inj.calls == [0, 1, -2, -1])
        let analyticParam = inj.grads

        let numEmb = numericGradient(emb, step: fdStep, loss)
        #expect(gradientError(dEmb.array, numEmb, rtol: fdRtol, atol: fdAtol) <= 1)
        let p0 = inj.params
        let numParam = numericGradient(p0, step: fdStep) { p in
            inj.params = p
            defer { inj.params = p0 }
            return loss(emb)
        }
        #expect(gradientError(analyticParam, numParam, rtol: fdRtol, atol: fdAtol) <= 1)
        // The gradients are not trivially zero.
        #expect(dEmb.array.map(abs).max()! > 0.01)
        #expect(analyticParam.map(abs).max()! > 0.01)
    }

    @Test("backward refuses an inference workspace and one that has not run forward")
    func backwardNeedsTrainingForward() throws {
        let c = LlamaTests.config
        let model = try LlamaModel(config: c, weights: InMemoryWeights(randomLlamaWeights(c, seed: 2)))
        let emb = Tensor(zeros: [1, 3, 16])
        let inference = model.makeWorkspace(batch: 1, length: 3, training: false)
        _ = try model.forward(embeddings: emb, workspace: inference)
        #expect(throws: ModelError.self) { try model.backward(dFinal: emb, workspace: inference) }
        let fresh = model.makeWorkspace(batch: 1, length: 3, training: true)
        #expect(throws: ModelError.self) { try model.backward(dFinal: emb, workspace: fresh) }
        #expect(throws: ModelError.self) { try model.forward(embeddings: Tensor(zeros: [1, 4, 16]), workspace: fresh) }
    }

    @Test("unsupported configs and a missing lm_head throw")
    func strict() throws {
        var c = LlamaTests.config
        c.mlpBias = true
        #expect(throws: ModelError.self) { try LlamaModel(config: c, weights: InMemoryWeights(randomLlamaWeights(c, seed: 1))) }
        var w = randomLlamaWeights(LlamaTests.config, seed: 1)
        w["lm_head.weight"] = nil
        #expect(throws: ModelError.self) { try LlamaModel(config: LlamaTests.config, weights: InMemoryWeights(w)) }
    }
}
