extension LlamaModel {
    /// Gradient w.r.t. the input embeddings [B, T, d], given the gradient `dFinal` w.r.t. the final-normed
    /// hidden states [B, T, d] of the last `forward` on this training workspace. Calls
    /// `injection.backward` for every layer (last to first). Activation gradients only.
    public func backward(dFinal: Tensor, injection: FFNInjection? = nil, workspace ws: LlamaWorkspace) throws -> Tensor {
        let c = config, N = ws.rows, d = c.hiddenSize
        guard ws.training, ws.forwardDone else {
            throw ModelError(.badInput, "backward needs a training workspace on which forward has run")
        }
        guard dFinal.count == N * d else {
            throw ModelError(.badInput, "dFinal has shape \(dFinal.shape); expected [\(ws.batch), \(ws.length), \(d)]")
        }
        RMSNorm.backward(dy: dFinal.data, x: ws.hiddenIn(layers.count), rows: N, dim: d, weight: norm.data,
                         rstd: ws.rstdFinal.data, dx: ws.dH.data, accumulate: false)
        for l in stride(from: layers.count - 1, through: 0, by: -1) {
            layerBackward(l, injection: injection, ws)
        }
        return Tensor(shape: [ws.batch, ws.length, d], copying: ws.dH.data)
    }

    /// In: ws.dH = gradient w.r.t. layer l's output. Out: ws.dH = gradient w.r.t. its input.
    func layerBackward(_ l: Int, injection: FFNInjection?, _ ws: LlamaWorkspace) {
        let c = config, L = layers[l], N = ws.rows, d = c.hiddenSize, F = c.intermediateSize, s = l
        let H = c.numAttentionHeads, Hkv = c.numKeyValueHeads, hd = c.headDim
        let qd = H * hd, kd = Hkv * hd
        let h = ws.hiddenIn(l)
        let q = ws.q.data + s * N * qd, k = ws.k.data + s * N * kd, v = ws.v.data + s * N * kd
        let hp = ws.hp.data + s * N * d, x = ws.x.data + s * N * d
        let gate = ws.gate.data + s * N * F, up = ws.up.data + s * N * F
        let dOut = ws.dH.data

        // MLP: out = h' + down(silu(gate x) * up x) + injection(x)
        BLAS.gemm(m: N, n: F, k: d, a: dOut, lda: d, b: L.down.data, ldb: F, beta: 0, c: ws.dAct.data, ldc: F)
        SwiGLU.backward(gate: gate, up: up, dAct: ws.dAct.data, dUp: ws.dUp.data, count: N * F)
        Linear.backward(dy: ws.dAct.data, x: nil, rows: N, inFeatures: d, weight: L.gate.data, outFeatures: F,
                        dx: ws.dX.data, accumulate: false)
        Linear.backward(dy: ws.dUp.data, x: nil, rows: N, inFeatures: d, weight: L.up.data, outFeatures: F,
                        dx: ws.dX.data, accumulate: true)
        injection?.backward(layer: l, x: x, dOut: dOut, dX: ws.dX.data)
        ws.dHp.data.update(from: dOut, count: N * d)
        RMSNorm.backward(dy: ws.dX.data, x: hp, rows: N, dim: d, weight: L.postNorm.data, rstd: ws.rstd2.data + s * N,
                         dx: ws.dHp.data, accumulate: true)

        // Attention: h' = h + o(attn(rope(q xn), rope(k xn), v xn)), xn = input_layernorm(h)
        BLAS.gemm(m: N, n: qd, k: d, a: ws.dHp.data, lda: d, b: L.ow.data, ldb: qd, beta: 0, c: ws.dAttn.data, ldc: qd)
        let shape = AttentionShape(batch: ws.batch, length: ws.length, heads: H, kvHeads: Hkv, headDim: hd, causal: true)
        Attention.backward(shape, q: q, k: k, v: v, keyMask: ws.hasMask ? UnsafePointer(ws.mask.data) : nil, probs: nil,
                           dOut: ws.dAttn.data,
                           dq: ws.dQ.data, dk: ws.dK.data, dv: ws.dV.data, scratch: ws.dS.buffer)
        Rotary.apply(ws.dQ.data, rows: N, heads: H, headDim: hd, cos: ws.cos.data, sin: ws.sin.data, inverse: true)
        Rotary.apply(ws.dK.data, rows: N, heads: Hkv, headDim: hd, cos: ws.cos.data, sin: ws.sin.data, inverse: true)
        let dXn = ws.dX.data  // reuse: dX is consumed above
        Linear.backward(dy: ws.dQ.data, x: nil, rows: N, inFeatures: d, weight: L.qw.data, outFeatures: qd, dx: dXn, accumulate: false)
        Linear.backward(dy: ws.dK.data, x: nil, rows: N, inFeatures: d, weight: L.kw.data, outFeatures: kd, dx: dXn, accumulate: true)
        Linear.backward(dy: ws.dV.data, x: nil, rows: N, inFeatures: d, weight: L.vw.data, outFeatures: kd, dx: dXn, accumulate: true)
        // dH = dH' + input_layernorm backward
        ws.dH.data.update(from: ws.dHp.data, count: N * d)
        RMSNorm.backward(dy: dXn, x: h, rows: N, dim: d, weight: L.inputNorm.data, rstd: ws.rstd1.data + s * N,
                         dx: ws.dH.data, accumulate: true)
    }
}
