/// The frozen CLIP vision tower (transformers' `CLIPVisionTransformer`), forward only: its candidate
/// features are computed once per image and cached (DESIGN.md §4).
public final class CLIPVisionModel: @unchecked Sendable {
    public let config: CLIPVisionConfig
    let act: Activation
    let patchWeight: Tensor      // [Dv, C * p * p], the conv weight flattened (c, ky, kx)
    let classEmbedding: Tensor   // [Dv]
    let positionEmbedding: Tensor // [1 + Np, Dv]
    let preLN: (w: Tensor, b: Tensor)
    let postLN: (w: Tensor, b: Tensor)
    let layers: [Layer]

    struct Layer {
        var ln1w, ln1b, ln2w, ln2b: Tensor
        var qw, qb, kw, kb, vw, vb, ow, ob: Tensor
        var fc1w, fc1b, fc2w, fc2b: Tensor
    }

    /// Tensors a checkpoint may hold that the model never reads: transformers' legacy `position_ids` buffer.
    public static let unusedCheckpointTensors = ["embeddings.position_ids"]

    /// Loads from the tower's weights under tower-relative names (`encoder.layers.0...`; see
    /// ``VisionBackboneDirectory/towerWeights(_:path:)``). Strict: anything left over throws, except the
    /// legacy `embeddings.position_ids` buffer.
    public init(config: CLIPVisionConfig, weights: WeightSource) throws {
        self.config = config
        act = try Activation(name: config.hiddenAct)
        let D = config.hiddenSize, I = config.intermediateSize, C = config.numChannels, ps = config.patchSize
        guard config.numAttentionHeads > 0, D % config.numAttentionHeads == 0 else {
            throw ModelError(.badConfig, "vision hidden_size \(D) is not a multiple of num_attention_heads \(config.numAttentionHeads)")
        }
        patchWeight = try weights.take("embeddings.patch_embedding.weight", shape: [D, C, ps, ps])
            .reshaped([D, C * ps * ps])
        classEmbedding = try weights.take("embeddings.class_embedding", shape: [D])
        positionEmbedding = try weights.take("embeddings.position_embedding.weight", shape: [config.numPatches + 1, D])
        preLN = (try weights.take("pre_layrnorm.weight", shape: [D]), try weights.take("pre_layrnorm.bias", shape: [D]))
        postLN = (try weights.take("post_layernorm.weight", shape: [D]), try weights.take("post_layernorm.bias", shape: [D]))
        var layers: [Layer] = []
        for i in 0..<config.numHiddenLayers {
            let l = "encoder.layers.\(i)."
            func t(_ n: String, _ s: [Int]) throws -> Tensor { try weights.take(l + n, shape: s) }
            layers.append(Layer(
                ln1w: try t("layer_norm1.weight", [D]), ln1b: try t("layer_norm1.bias", [D]),
                ln2w: try t("layer_norm2.weight", [D]), ln2b: try t("layer_norm2.bias", [D]),
                qw: try t("self_attn.q_proj.weight", [D, D]), qb: try t("self_attn.q_proj.bias", [D]),
                kw: try t("self_attn.k_proj.weight", [D, D]), kb: try t("self_attn.k_proj.bias", [D]),
                vw: try t("self_attn.v_proj.weight", [D, D]), vb: try t("self_attn.v_proj.bias", [D]),
                ow: try t("self_attn.out_proj.weight", [D, D]), ob: try t("self_attn.out_proj.bias", [D]),
                fc1w: try t("mlp.fc1.weight", [I, D]), fc1b: try t("mlp.fc1.bias", [I]),
                fc2w: try t("mlp.fc2.weight", [D, I]), fc2b: try t("mlp.fc2.bias", [D])))
        }
        self.layers = layers
        try weights.finish(ignoringPrefixes: Self.unusedCheckpointTensors)
    }

    /// Every hidden state, as transformers' `output_hidden_states=True`: element 0 is
    /// pre_layrnorm(embeddings), element j is the output of encoder layer j; each [B, 1 + Np, Dv].
    /// `pixelValues` [B, C, H, W] are already normalised (CLIP units), H = W = image_size.
    public func forward(pixelValues: Tensor) throws -> [Tensor] {
        let c = config
        guard pixelValues.shape.count == 4, pixelValues.shape[1] == c.numChannels,
              pixelValues.shape[2] == c.imageSize, pixelValues.shape[3] == c.imageSize else {
            throw ModelError(.badInput,
                "pixel_values has shape \(pixelValues.shape); expected [B, \(c.numChannels), \(c.imageSize), \(c.imageSize)]")
        }
        let B = pixelValues.shape[0], D = c.hiddenSize, I = c.intermediateSize
        let g = c.imageSize / c.patchSize, Np = g * g, S = Np + 1, N = B * S, ps = c.patchSize
        let H = c.numAttentionHeads, hd = D / H, K = c.numChannels * ps * ps

        // Patch conv as one GEMM over unfolded patches, order (c, ky, kx) like the conv weight.
        let cols = Tensor(zeros: [B * Np, K])
        let patches = Tensor(zeros: [B * Np, D])
        let img = c.imageSize
        for b in 0..<B {
            for py in 0..<g {
                for px in 0..<g {
                    let dst = cols.data + ((b * Np) + py * g + px) * K
                    for ch in 0..<c.numChannels {
                        for ky in 0..<ps {
                            let src = pixelValues.data + ((b * c.numChannels + ch) * img + py * ps + ky) * img + px * ps
                            (dst + (ch * ps + ky) * ps).update(from: src, count: ps)
                        }
                    }
                }
            }
        }
        BLAS.gemm(transB: true, m: B * Np, n: D, k: K, a: cols.data, lda: K, b: patchWeight.data, ldb: K,
                  beta: 0, c: patches.data, ldc: D)
        let h = Tensor(zeros: [B, S, D])
        for b in 0..<B {
            let row0 = h.data + b * S * D
            row0.update(from: classEmbedding.data, count: D)
            (row0 + D).update(from: patches.data + b * Np * D, count: Np * D)
            Vec.add(positionEmbedding.data, row0, S * D)
        }
        LayerNorm.forward(x: h.data, rows: N, dim: D, gamma: preLN.w.data, beta: preLN.b.data, eps: c.layerNormEps, y: h.data)
        var states = [h]

        // Workspace, reused by every layer.
        let xn = Tensor(zeros: [N, D]), q = Tensor(zeros: [N, D]), k = Tensor(zeros: [N, D]), v = Tensor(zeros: [N, D])
        let attn = Tensor(zeros: [N, D]), mid = Tensor(zeros: [N, I]), scratch = Tensor(zeros: [BLAS.threads, S * S])
        let shape = AttentionShape(batch: B, length: S, heads: H, kvHeads: H, headDim: hd, causal: false)
        var cur = h
        for L in layers {
            let next = cur.copy()
            LayerNorm.forward(x: cur.data, rows: N, dim: D, gamma: L.ln1w.data, beta: L.ln1b.data, eps: c.layerNormEps, y: xn.data)
            Linear.forward(x: xn.data, rows: N, inFeatures: D, weight: L.qw.data, bias: L.qb.data, outFeatures: D, y: q.data)
            Linear.forward(x: xn.data, rows: N, inFeatures: D, weight: L.kw.data, bias: L.kb.data, outFeatures: D, y: k.data)
            Linear.forward(x: xn.data, rows: N, inFeatures: D, weight: L.vw.data, bias: L.vb.data, outFeatures: D, y: v.data)
            Attention.forward(shape, q: q.data, k: k.data, v: v.data, keyMask: nil, scratch: scratch.buffer, out: attn.data)
            // next = cur + attn Woᵀ + bo
            for r in 0..<N { Vec.add(L.ob.data, next.data + r * D, D) }
            BLAS.gemm(transB: true, m: N, n: D, k: D, a: attn.data, lda: D, b: L.ow.data, ldb: D, beta: 1, c: next.data, ldc: D)
            LayerNorm.forward(x: next.data, rows: N, dim: D, gamma: L.ln2w.data, beta: L.ln2b.data, eps: c.layerNormEps, y: xn.data)
            Linear.forward(x: xn.data, rows: N, inFeatures: D, weight: L.fc1w.data, bias: L.fc1b.data, outFeatures: I, y: mid.data)
            act.forward(mid.data, mid.data, count: N * I)
            for r in 0..<N { Vec.add(L.fc2b.data, next.data + r * D, D) }
            BLAS.gemm(transB: true, m: N, n: D, k: I, a: mid.data, lda: I, b: L.fc2w.data, ldb: I, beta: 1, c: next.data, ldc: D)
            states.append(next)
            cur = next
        }
        return states
    }

    /// post_layernorm applied to every row of a hidden state (any shape whose last dimension is Dv).
    public func postLayerNorm(_ h: Tensor) -> Tensor {
        let D = config.hiddenSize
        precondition(h.shape.last == D, "postLayerNorm expects last dimension \(D), got \(h.shape)")
        let y = Tensor(zeros: h.shape)
        LayerNorm.forward(x: h.data, rows: h.count / D, dim: D, gamma: postLN.w.data, beta: postLN.b.data,
                          eps: config.layerNormEps, y: y.data)
        return y
    }
}
