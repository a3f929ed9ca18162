/// The frozen LLaMA language model (`LlamaForCausalLM` weights), with a training forward that keeps its
/// activations and a backward that returns activation gradients only (frozen weights get none).
///
/// Immutable after loading (hence Sendable); all per-call state lives in a `LlamaWorkspace`, one per thread.
///
/// Training step with an injection:
/// ```swift
/// let ws = model.makeWorkspace(batch: B, length: T, training: true)   // reuse across steps
/// let (final, _) = try model.forward(embeddings: e, positions: pos, keyMask: mask, injection: inj, workspace: ws)
/// let logits = model.logits(final, rows: rows)                         // [rows.count, V]
/// let dFinal = Tensor(zeros: [B, T, d])
/// model.accumulateLogitGradient(dLogits, rows: rows, into: dFinal)
/// let dEmbeddings = try model.backward(dFinal: dFinal, injection: inj, workspace: ws)
/// ```
public final class LlamaModel: @unchecked Sendable {
    public let config: LlamaConfig
    public let embedTokens: Tensor   // [V, d]
    /// `lm_head.weight`, or `embedTokens` when the embeddings are tied.
    public let lmHead: Tensor        // [V, d]
    let norm: Tensor
    let layers: [Layer]

    struct Layer {
        var inputNorm, postNorm: Tensor
        var qw, kw, vw, ow: Tensor
        var gate, up, down: Tensor
    }

    /// Tensors a checkpoint may hold that the model never reads: legacy `rotary_emb.inv_freq` buffers, and
    /// with tied embeddings a stored `lm_head.weight` copy.
    public static func unusedCheckpointTensors(_ c: LlamaConfig) -> [String] {
        ["model.rotary_emb.inv_freq"] + (0..<c.numHiddenLayers).map { "model.layers.\($0).self_attn.rotary_emb.inv_freq" }
            + (c.tieWordEmbeddings ? ["lm_head.weight"] : [])
    }

    public init(config: LlamaConfig, weights: WeightSource) throws {
        self.config = config
        let c = config
        guard !c.attentionBias, !c.mlpBias else {
            throw ModelError(.unsupported, "attention_bias/mlp_bias = true is not supported; LLaMA checkpoints have no biases")
        }
        guard c.headDim % 2 == 0 else {
            throw ModelError(.badConfig, "head_dim \(c.headDim) must be even for rotary embeddings")
        }
        guard c.numKeyValueHeads > 0, c.numAttentionHeads % c.numKeyValueHeads == 0 else {
            throw ModelError(.badConfig,
                "num_attention_heads (\(c.numAttentionHeads)) must be a multiple of num_key_value_heads (\(c.numKeyValueHeads))")
        }
        let d = c.hiddenSize, F = c.intermediateSize, V = c.vocabSize
        let qd = c.numAttentionHeads * c.headDim, kd = c.numKeyValueHeads * c.headDim
        embedTokens = try weights.take("model.embed_tokens.weight", shape: [V, d])
        norm = try weights.take("model.norm.weight", shape: [d])
        var layers: [Layer] = []
        for i in 0..<c.numHiddenLayers {
            let p = "model.layers.\(i)."
            func t(_ n: String, _ s: [Int]) throws -> Tensor { try weights.take(p + n, shape: s) }
            layers.append(Layer(
                inputNorm: try t("input_layernorm.weight", [d]), postNorm: try t("post_attention_layernorm.weight", [d]),
                qw: try t("self_attn.q_proj.weight", [qd, d]), kw: try t("self_attn.k_proj.weight", [kd, d]),
                vw: try t("self_attn.v_proj.weight", [kd, d]), ow: try t("self_attn.o_proj.weight", [d, qd]),
                gate: try t("mlp.gate_proj.weight", [F, d]), up: try t("mlp.up_proj.weight", [F, d]),
                down: try t("mlp.down_proj.weight", [d, F])))
        }
        self.layers = layers
        if c.tieWordEmbeddings {
            lmHead = embedTokens
        } else {
            lmHead = try weights.take("lm_head.weight", shape: [V, d])
        }
        try weights.finish(ignoringPrefixes: Self.unusedCheckpointTensors(c))
    }

    public func makeWorkspace(batch: Int, length: Int, training: Bool) -> LlamaWorkspace {
        LlamaWorkspace(config: config, batch: batch, length: length, training: training)
    }

    /// Token embeddings [B, T, d] for `ids` ([B * T], row-major).
    public func embed(ids: [Int32], batch: Int, length: Int) throws -> Tensor {
        guard ids.count == batch * length else {
            throw ModelError(.badInput, "\(ids.count) token ids for batch \(batch) x length \(length)")
        }
        let d = config.hiddenSize
        let out = Tensor(zeros: [batch, length, d])
        for (r, id) in ids.enumerated() {
            guard id >= 0, Int(id) < config.vocabSize else {
                throw ModelError(.badInput, "token id \(id) at \(r) is outside the vocabulary (0..<\(config.vocabSize))")
            }
            (out.data + r * d).update(from: embedTokens.data + Int(id) * d, count: d)
        }
        return out
    }

    /// Runs the causal LM from input embeddings [B, T, d] (B, T = the workspace's).
    ///
    /// - positions: RoPE position per token [B * T] (default 0..T-1 in each row). Each must be below
    ///   `max_position_embeddings` unless the rope type is `dynamic`. With dynamic NTK scaling the
    ///   frequencies are computed from this call's largest position + 1, as transformers does per forward
    ///   call: a row's rotations then depend on the longest row (the padded length, with default
    ///   positions) of its micro-batch, exactly as in transformers with that batch.
    /// - keyMask: [B, T], nonzero = may be attended (default all).
    /// - injection: added into each layer's FFN output (see `FFNInjection`).
    /// - Returns: the final-normed hidden states [B, T, d], a view into the workspace that the next call
    ///   overwrites; and, when `outputHiddenStates`, copies of transformers' `hidden_states` (L + 1 tensors).
    /// - cache: when given, every layer's keys (after RoPE) and values of positions 0..<T are kept there,
    ///   with `keyMask`, for `decode` to continue from (``KVCache``); positions must then be the default.
    /// With a training workspace, everything `backward` needs is kept.
    public func forward(embeddings: Tensor, positions: [Int32]? = nil, keyMask: Tensor? = nil,
                        injection: FFNInjection? = nil, workspace ws: LlamaWorkspace, cache: KVCache? = nil,
                        outputHiddenStates: Bool = false) throws -> (final: Tensor, hiddenStates: [Tensor]) {
        let c = config, B = ws.batch, T = ws.length, N = ws.rows, d = c.hiddenSize
        guard embeddings.shape == [B, T, d] else {
            throw ModelError(.badInput, "embeddings have shape \(embeddings.shape); the workspace expects [\(B), \(T), \(d)]")
        }
        if let positions {
            guard positions.count == N else { throw ModelError(.badInput, "\(positions.count) positions for \(N) tokens") }
            ws.positions = positions
        } else {
            for r in 0..<N { ws.positions[r] = Int32(r % T) }
        }
        if let keyMask {
            guard keyMask.count == N else { throw ModelError(.badInput, "key mask has shape \(keyMask.shape); expected [\(B), \(T)]") }
            ws.mask.data.update(from: keyMask.data, count: N)
        }
        ws.hasMask = keyMask != nil
        let invFreq = inverseFrequencies(sequenceLength: try checkedSequenceLength(ws.positions))
        if let cache {
            guard positions == nil, cache.batch == B, T <= cache.capacity else {
                throw ModelError(.badInput, "a key/value cache of \(cache.batch) rows of \(cache.capacity) positions cannot "
                    + "start from \(B) rows of \(T) positions\(positions == nil ? "" : " at explicit positions")")
            }
            cache.start(mask: keyMask?.data, length: T, inverseFrequencies: invFreq)
        }
        ws.positions.withUnsafeBufferPointer { p in
            invFreq.withUnsafeBufferPointer {
                Rotary.tables(positions: p.baseAddress!, count: N, inverseFrequencies: $0, cos: ws.cos.data, sin: ws.sin.data)
            }
        }
        ws.hiddenIn(0).update(from: embeddings.data, count: N * d)
        var states: [Tensor] = []
        for l in 0..<layers.count {
            if outputHiddenStates { states.append(Tensor(shape: [B, T, d], copying: ws.hiddenIn(l))) }
            layerForward(l, injection: injection, cache: cache, ws)
        }
        RMSNorm.forward(x: ws.hiddenIn(layers.count), rows: N, dim: d, weight: norm.data, eps: c.rmsNormEps,
                        y: ws.final.data, rstd: ws.rstdFinal.data)
        if outputHiddenStates { states.append(ws.final.copy()) }
        ws.forwardDone = true
        return (Tensor(shape: [B, T, d], borrowing: ws.final.data, owner: ws), states)
    }

    /// The call's largest position + 1, transformers' `seq_len` for dynamic RoPE. Negative positions, and
    /// positions at or past `max_position_embeddings` for a type that does not extend the context, are
    /// errors: transformers would compute them, but with rotations the model never saw.
    /// transformers' inv_freq for a forward call whose largest position + 1 is `sequenceLength`.
    func inverseFrequencies(sequenceLength: Int) -> [Float] {
        Rotary.inverseFrequencies(headDim: config.headDim, theta: config.ropeTheta, scaling: config.ropeScaling,
                                  maxPositionEmbeddings: config.maxPositionEmbeddings, sequenceLength: sequenceLength)
    }

    func checkedSequenceLength(_ positions: [Int32]) throws -> Int {
        let c = config
        guard let lowest = positions.min(), let highest = positions.max() else { return 0 }
        guard lowest >= 0 else { throw ModelError(.badInput, "position \(lowest) is negative; RoPE positions start at 0") }
        if Int(highest) >= c.maxPositionEmbeddings && !c.ropeScaling.allowsPositionsPastMaxPositionEmbeddings {
            throw ModelError(.badInput,
                "position \(highest) is past the language model's max_position_embeddings \(c.maxPositionEmbeddings) (positions 0..<\(c.maxPositionEmbeddings)), which rope type '\(c.ropeScaling.typeName)' does not extend; use sequences of at most \(c.maxPositionEmbeddings) tokens (visual tokens included) or a model whose config allows longer ones")
        }
        return Int(highest) + 1
    }

    func layerForward(_ l: Int, injection: FFNInjection?, cache: KVCache?, _ ws: LlamaWorkspace) {
        let c = config, s = ws.slot(l), N = ws.rows
        let q = ws.q.data + s * N * c.numAttentionHeads * c.headDim
        let k = ws.k.data + s * N * c.numKeyValueHeads * c.headDim, v = ws.v.data + s * N * c.numKeyValueHeads * c.headDim
        attentionInput(l, ws, fewRows: false)
        cache?.store(layer: l, keys: k, values: v, length: ws.length)
        let shape = AttentionShape(batch: ws.batch, length: ws.length, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                                   headDim: c.headDim, causal: true)
        Attention.forward(shape, q: q, k: k, v: v, keyMask: ws.hasMask ? UnsafePointer(ws.mask.data) : nil,
                          scratch: ws.attentionScratch.buffer, out: ws.attn.data)
        attentionOutputAndMLP(l, injection: injection, ws, fewRows: false)
    }

    /// The first half of layer l on the workspace's rows: input_layernorm, then q, k and v (rotated by the
    /// workspace's cos/sin tables) into the layer's slot. `fewRows`: a decode step's (``project``).
    func attentionInput(_ l: Int, _ ws: LlamaWorkspace, fewRows: Bool) {
        let c = config, L = layers[l], N = ws.rows, d = c.hiddenSize, s = ws.slot(l)
        let H = c.numAttentionHeads, Hkv = c.numKeyValueHeads, hd = c.headDim
        let qd = H * hd, kd = Hkv * hd
        let q = ws.q.data + s * N * qd, k = ws.k.data + s * N * kd, v = ws.v.data + s * N * kd
        RMSNorm.forward(x: ws.hiddenIn(l), rows: N, dim: d, weight: L.inputNorm.data, eps: c.rmsNormEps, y: ws.xn.data,
                        rstd: ws.rstd1.data + s * N)
        project(ws.xn.data, rows: N, L.qw, inFeatures: d, outFeatures: qd, into: q, fewRows: fewRows)
        project(ws.xn.data, rows: N, L.kw, inFeatures: d, outFeatures: kd, into: k, fewRows: fewRows)
        project(ws.xn.data, rows: N, L.vw, inFeatures: d, outFeatures: kd, into: v, fewRows: fewRows)
        Rotary.apply(q, rows: N, heads: H, headDim: hd, cos: ws.cos.data, sin: ws.sin.data)
        Rotary.apply(k, rows: N, heads: Hkv, headDim: hd, cos: ws.cos.data, sin: ws.sin.data)
    }

    /// The second half of layer l, from the attention output in ws.attn: o_proj and the residual (h'),
    /// post_attention_layernorm (x), the MLP and the injection, into the next hidden state.
    func attentionOutputAndMLP(_ l: Int, injection: FFNInjection?, _ ws: LlamaWorkspace, fewRows: Bool) {
        let c = config, L = layers[l], N = ws.rows, d = c.hiddenSize, F = c.intermediateSize, s = ws.slot(l)
        let qd = c.numAttentionHeads * c.headDim
        let h = ws.hiddenIn(l), out = ws.hiddenIn(l + 1)
        let hp = ws.hp.data + s * N * d, x = ws.x.data + s * N * d
        let gate = ws.gate.data + s * N * F, up = ws.up.data + s * N * F
        hp.update(from: h, count: N * d)
        project(ws.attn.data, rows: N, L.ow, inFeatures: qd, outFeatures: d, beta: 1, into: hp, fewRows: fewRows)

        RMSNorm.forward(x: hp, rows: N, dim: d, weight: L.postNorm.data, eps: c.rmsNormEps, y: x, rstd: ws.rstd2.data + s * N)
        project(x, rows: N, L.gate, inFeatures: d, outFeatures: F, into: gate, fewRows: fewRows)
        project(x, rows: N, L.up, inFeatures: d, outFeatures: F, into: up, fewRows: fewRows)
        SwiGLU.forward(gate: gate, up: up, out: ws.act.data, count: N * F)
        out.update(from: hp, count: N * d)
        project(ws.act.data, rows: N, L.down, inFeatures: F, outFeatures: d, beta: 1, into: out, fewRows: fewRows)
        injection?.forward(layer: l, x: x, out: out)
    }

    /// y[rows, out] = x[rows, in] Wᵀ + beta y for a weight W [out, in]. `fewRows` (a decode step's one
    /// position per sample) takes ``BLAS/gemmFewRows(m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``, which skips
    /// OpenBLAS's packing of the whole weight; the full-length forward keeps its plain product, bit for bit.
    @inline(__always) func project(_ x: UnsafePointer<Float>, rows: Int, _ weight: Tensor, inFeatures: Int, outFeatures: Int,
                                   beta: Float = 0, into y: UnsafeMutablePointer<Float>, fewRows: Bool) {
        if fewRows {
            BLAS.gemmFewRows(m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: weight.data, ldb: inFeatures,
                             beta: beta, c: y, ldc: outFeatures)
        } else {
            BLAS.gemm(transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: weight.data,
                      ldb: inFeatures, beta: beta, c: y, ldc: outFeatures)
        }
    }

    /// Logits [B, T, V] (or [rows, V]) for every row of final-normed hidden states.
    public func logits(_ hidden: Tensor) -> Tensor {
        let d = config.hiddenSize, V = config.vocabSize, N = hidden.count / d
        precondition(hidden.shape.last == d, "hidden states must end in \(d), got \(hidden.shape)")
        let out = Tensor(zeros: Array(hidden.shape.dropLast()) + [V])
        Linear.forward(x: hidden.data, rows: N, inFeatures: d, weight: lmHead.data, bias: nil, outFeatures: V, y: out.data)
        return out
    }

    /// Logits [N, V] of a decode step's final-normed hidden states [N, d] (``project``'s few-rows product).
    func decodeLogits(_ hidden: Tensor) -> Tensor {
        let d = config.hiddenSize, V = config.vocabSize, n = hidden.count / d
        let out = Tensor(zeros: [n, V])
        project(hidden.data, rows: n, lmHead, inFeatures: d, outFeatures: V, into: out.data, fewRows: true)
        return out
    }

    /// Logits [rows.count, V] for selected rows (flat indices b * T + t) of final-normed hidden states.
    public func logits(_ hidden: Tensor, rows: [Int]) -> Tensor {
        let d = config.hiddenSize, V = config.vocabSize
        let picked = Tensor(zeros: [rows.count, d])
        for (i, r) in rows.enumerated() {
            precondition(r >= 0 && r < hidden.count / d, "row \(r) out of range")
            (picked.data + i * d).update(from: hidden.data + r * d, count: d)
        }
        let out = Tensor(zeros: [rows.count, V])
        Linear.forward(x: picked.data, rows: rows.count, inFeatures: d, weight: lmHead.data, bias: nil, outFeatures: V, y: out.data)
        return out
    }

    /// The backward of `logits(_:rows:)`: adds dLogits [rows.count, V] · lm_head into the matching rows
    /// of `dHidden` ([B, T, d], the gradient w.r.t. the final-normed hidden states).
    public func accumulateLogitGradient(_ dLogits: Tensor, rows: [Int], into dHidden: Tensor) {
        let d = config.hiddenSize, V = config.vocabSize
        precondition(dLogits.shape == [rows.count, V], "dLogits must be [\(rows.count), \(V)], got \(dLogits.shape)")
        let tmp = Tensor(zeros: [rows.count, d])
        Linear.backward(dy: dLogits.data, x: nil, rows: rows.count, inFeatures: d, weight: lmHead.data, outFeatures: V,
                        dx: tmp.data, accumulate: false)
        for (i, r) in rows.enumerated() { Vec.add(tmp.data + i * d, dHidden.data + r * d, d) }
    }
}
