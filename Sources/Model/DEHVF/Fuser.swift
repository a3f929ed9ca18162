import Foundation

/// One sample of a micro-batch, as the fuser sees it.
public struct FuserSample {
    /// Candidate features [S, M, Dv] (post-layernorm, pooled), or nil for a sample without an image.
    public var features: UnsafePointer<Float>?
    /// Prompt positions: t < promptCount (before the first labelled token, inside the attention mask).
    public var promptCount: Int
    /// Index of the sample in the dataset: keys its dropout masks.
    public var sampleIndex: Int

    public init(features: UnsafePointer<Float>?, promptCount: Int, sampleIndex: Int) {
        self.features = features
        self.promptCount = promptCount
        self.sampleIndex = sampleIndex
    }
}

/// The trainable DEHVF part (DESIGN.md §4): per-layer router over candidate ViT layers, the shared
/// projector, and the key/value memory injected into each LLM layer's feed-forward block.
///
/// Use per micro-batch: `begin(samples:tokens:dropout:)`, then the LLM's forward/backward calls
/// `forward(layer:...)`/`backward(layer:...)` through `FFNInjection`, then `finishBackward()` adds the
/// projector's fc1 gradient. Gradients accumulate into `grads` (sums over the micro-batch, never means).
///
/// fc1 is linear, so fc1(sum_j a_j F_j) = sum_j a_j (F_j W1ᵀ): the S products F_j W1ᵀ are computed once per
/// micro-batch and mixed per layer; fc1's weight gradient likewise collects sum_l a_lj dpre_l per
/// candidate and multiplies by F_j once at the end.
public final class Fuser: FFNInjection {
    public let config: FuserConfig
    /// The parameters the next micro-batch runs with; `grads` has the same names and shapes.
    public var params: TensorSet {
        didSet { precondition(params.names == grads.names, "parameter set does not match the fuser") }
    }
    public let grads: TensorSet
    /// When set, each layer's keys and values are kept there as `forward` builds them (for decoding).
    var recording: VisualMemory?

    private var batch = 0, tokens = 0
    private var samples: [FuserSample] = []
    private var dropout: DropoutMask?
    private var ws = Workspace()

    public init(config: FuserConfig, params: TensorSet) {
        self.config = config
        self.params = params
        self.grads = params.zerosLike()
    }

    private var S: Int { config.candidates }
    private var M: Int { config.visualTokens }
    private var d: Int { config.llmWidth }
    private var r: Int { config.projectorRank }
    private var dv: Int { config.visionWidth }
    private var L: Int { config.llmLayers }
    private var routed: Bool { config.fusion == .dehvf }

    private func p(_ name: String) -> UnsafeMutablePointer<Float> { params[name]!.data }
    private func g(_ name: String) -> UnsafeMutablePointer<Float> { grads[name]!.data }

    /// Buffers sized for the current micro-batch shape, reused while it stays the same.
    private struct Workspace {
        var key = [0, 0]
        var feats = Buffer(), fc1 = Buffer(), fc1Grad = Buffer()           // [S, B*M, Dv], [S, B*M, r] x2
        var u = Buffer(), alpha = Buffer(), pre = Buffer(), scores = Buffer() // saved per layer
        var h = Buffer(), proj = Buffer(), keys = Buffer(), values = Buffer(), dProj = Buffer()
        var act = Buffer(), mask = Buffer(), dAct = Buffer(), dH = Buffer(), small = Buffer()  // act/mask/dAct: per lane
        var lanes = 0
    }

    /// Starts a micro-batch of `samples.count` rows of `tokens` positions. `dropout` nil means off.
    public func begin(samples: [FuserSample], tokens: Int, dropout: DropoutMask?) {
        self.samples = samples
        self.batch = samples.count
        self.tokens = tokens
        self.dropout = (dropout?.p ?? 0) > 0 ? dropout : nil
        let bm = batch * M
        if ws.key != [batch, tokens] || ws.lanes != BLAS.threads {
            ws.key = [batch, tokens]
            ws.lanes = BLAS.threads
            ws.feats.resize(S * bm * dv); ws.fc1.resize(S * bm * r); ws.fc1Grad.resize(S * bm * r)
            ws.u.resize(L * batch * d); ws.alpha.resize(L * batch * S); ws.pre.resize(L * bm * r)
            ws.scores.resize(L * batch * tokens * M)
            ws.h.resize(bm * r); ws.proj.resize(bm * d); ws.keys.resize(bm * d); ws.values.resize(bm * d)
            ws.dProj.resize(bm * d); ws.dH.resize(bm * r)
            ws.act.resize(ws.lanes * tokens * M); ws.mask.resize(ws.lanes * tokens * M); ws.dAct.resize(ws.lanes * tokens * M)
            ws.small.resize(max(d, S) * 2)
        }
        // Stack candidate features per candidate: feats[j][b*M + m] = F_j of sample b (zero without image).
        for (b, s) in samples.enumerated() {
            for j in 0..<S {
                let dst = ws.feats.p + (j * bm + b * M) * dv
                if let f = s.features { dst.update(from: f + j * M * dv, count: M * dv) } else { dst.update(repeating: 0, count: M * dv) }
            }
        }
        let w1 = p("projector.fc1.weight")
        for j in 0..<S {
            gemm(false, true, bm, r, dv, 1, ws.feats.p + j * bm * dv, dv, w1, dv, 0, ws.fc1.p + j * bm * r, r)
        }
        ws.fc1Grad.zero()
    }

    // MARK: projector (shared by the memory modes and concat)

    /// pre = sum_j alpha_j (F_j W1ᵀ) + b1 for every sample, into `pre` [B*M, r].
    private func mixFc1(alpha: UnsafePointer<Float>?, into pre: UnsafeMutablePointer<Float>) {
        let bm = batch * M, b1 = p("projector.fc1.bias")
        for b in 0..<batch {
            let dst = pre + b * M * r
            for m in 0..<M { (dst + m * r).update(from: b1, count: r) }
            for j in 0..<S {
                let a = alpha.map { $0[b * S + j] } ?? 1
                Vec.axpy(a, ws.fc1.p + j * bm * r + b * M * r, dst, M * r)
            }
        }
    }

    /// h = SiLU(pre); proj = h W2ᵀ + b2  ([B*M, d]).
    private func projectorOut(pre: UnsafePointer<Float>) {
        let bm = batch * M
        Activation.silu.forward(pre, ws.h.p, count: bm * r)
        let b2 = p("projector.fc2.bias")
        for row in 0..<bm { (ws.proj.p + row * d).update(from: b2, count: d) }
        gemm(false, true, bm, d, r, 1, ws.h.p, r, p("projector.fc2.weight"), r, 1, ws.proj.p, d)
    }

    /// Given dProj [B*M, d] (zero rows for samples without an image): fc2 gradients, then dpre, fc1 bias,
    /// and the per-candidate accumulators for fc1's weight. Returns dAlpha [B, S] (the gradient of each
    /// sample's mixing weights, <dpre_b, F_j W1ᵀ of b>) and leaves dpre in ws.dH.
    private func projectorBackward(pre: UnsafePointer<Float>, alpha: UnsafePointer<Float>?) -> [Float] {
        let bm = batch * M
        gemm(true, false, d, r, bm, 1, ws.dProj.p, d, ws.h.p, r, 1, g("projector.fc2.weight"), r)
        colSum(ws.dProj.p, rows: bm, cols: d, into: g("projector.fc2.bias"))
        gemm(false, false, bm, r, d, 1, ws.dProj.p, d, p("projector.fc2.weight"), r, 0, ws.dH.p, r)
        Activation.silu.backward(pre, dy: ws.dH.p, dx: ws.dH.p, count: bm * r)
        colSum(ws.dH.p, rows: bm, cols: r, into: g("projector.fc1.bias"))
        // dalpha[b][j] = <dpre_b, F_j W1ᵀ of b>; fc1Grad[j] += alpha_j dpre.
        var dAlpha = [Float](repeating: 0, count: batch * S)
        for b in 0..<batch {
            let dpre = ws.dH.p + b * M * r
            for j in 0..<S {
                let a = ws.fc1.p + j * bm * r + b * M * r
                dAlpha[b * S + j] = Vec.dot(dpre, a, M * r)
                Vec.axpy(alpha.map { $0[b * S + j] } ?? 1, dpre, ws.fc1Grad.p + j * bm * r + b * M * r, M * r)
            }
        }
        return dAlpha
    }

    /// Adds fc1's weight gradient: sum_j (collected dpre_j)ᵀ F_j. Call once after the LLM backward.
    public func finishBackward() {
        let bm = batch * M
        for j in 0..<S {
            gemm(true, false, r, dv, bm, 1, ws.fc1Grad.p + j * bm * r, r, ws.feats.p + j * bm * dv, dv, 1,
                 g("projector.fc1.weight"), dv)
        }
    }

    // MARK: memory modes (dehvf, memvp)

    /// Router for layer l: u = prompt mean of x, alpha = softmax(W u + b). Saves u and alpha.
    private func route(layer l: Int, x: UnsafePointer<Float>) {
        let alpha = ws.alpha.p + l * batch * S
        guard routed else { for i in 0..<(batch * S) { alpha[i] = 1 }; return }
        let w = p("router.weight") + l * S * d, bias = p("router.bias") + l * S
        for b in 0..<batch {
            let u = ws.u.p + (l * batch + b) * d
            u.update(repeating: 0, count: d)
            let n = samples[b].promptCount
            for t in 0..<n { Vec.axpy(1, x + (b * tokens + t) * d, u, d) }
            Vec.scale(u, 1 / Float(max(n, 1)), d)
            let a = alpha + b * S
            for j in 0..<S { a[j] = bias[j] + Vec.dot(w + j * d, u, d) }
            Softmax.rows(a, rows: 1, n: S)
        }
    }

    /// Keys and values for layer l from its saved pre-activation: K = Z + key_pos, V = Z + value_pos,
    /// Z = feature_scale * P (zero for a sample without an image).
    private func memory(layer l: Int) {
        let bm = batch * M
        projectorOut(pre: ws.pre.p + l * bm * r)
        let kp = p("prompt.key_pos"), vp = p("prompt.value_pos"), fs = config.featureScale
        for b in 0..<batch {
            let z = ws.proj.p + b * M * d, k = ws.keys.p + b * M * d, v = ws.values.p + b * M * d
            let img: Float = samples[b].features == nil ? 0 : fs
            for i in 0..<(M * d) { k[i] = img * z[i] + kp[i]; v[i] = img * z[i] + vp[i] }
        }
    }

    /// The dropout multipliers of (layer, sample) in lane `lane`'s buffer, or nil with dropout off.
    private func dropoutMask(layer l: Int, sample b: Int, lane: Int) -> UnsafePointer<Float>? {
        guard let dropout else { return nil }
        let tm = tokens * M, out = ws.mask.p + lane * tm
        dropout.fill(sample: samples[b].sampleIndex, layer: l, count: tm, into: out)
        return UnsafePointer(out)
    }

    public func forward(layer l: Int, x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        guard config.fusion != .concat else { return }
        let bm = batch * M
        route(layer: l, x: x)
        mixFc1(alpha: ws.alpha.p + l * batch * S, into: ws.pre.p + l * bm * r)
        memory(layer: l)
        recording?.record(layer: l, keys: ws.keys.p, values: ws.values.p)
        let tm = tokens * M
        // One sample per item: its scores, SiLU and dropout, and its rows of `out`.
        BLAS.parallel(batch, maxLanes: ws.lanes) { b, lane in
            let xb = x + b * tokens * d, s = ws.scores.p + (l * batch + b) * tm, act = ws.act.p + lane * tm
            gemm(false, true, tokens, M, d, 1, xb, d, ws.keys.p + b * M * d, d, 0, s, M)
            siluTimes(s, dropoutMask(layer: l, sample: b, lane: lane), into: act, count: tm)
            gemm(false, false, tokens, d, M, config.injectionScale, act, M, ws.values.p + b * M * d, d, 1,
                 out + b * tokens * d, d)
        }
    }

    public func backward(layer l: Int, x: UnsafePointer<Float>, dOut: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>) {
        guard config.fusion != .concat else { return }
        let bm = batch * M, tm = tokens * M, inj = config.injectionScale, fs = config.featureScale
        memory(layer: l)
        let gk = g("prompt.key_pos"), gv = g("prompt.value_pos")
        // One sample per item: dK into proj (free again after memory()), dV into dProj, its rows of dX.
        BLAS.parallel(batch, maxLanes: ws.lanes) { b, lane in
            let xb = x + b * tokens * d, dob = dOut + b * tokens * d, dxb = dX + b * tokens * d
            let s = ws.scores.p + (l * batch + b) * tm, act = ws.act.p + lane * tm, dAct = ws.dAct.p + lane * tm
            let mask = dropoutMask(layer: l, sample: b, lane: lane)
            siluTimes(s, mask, into: act, count: tm)
            let dk = ws.proj.p + b * M * d, dvb = ws.dProj.p + b * M * d
            // dV = inj * actᵀ dOut ; dAct = inj * dOut Vᵀ ; ds = dAct * mask * silu'(s)
            gemm(true, false, M, d, tokens, inj, act, M, dob, d, 0, dvb, d)
            gemm(false, true, tokens, M, d, inj, dob, d, ws.values.p + b * M * d, d, 0, dAct, M)
            siluGradTimes(s, mask, into: dAct, count: tm)
            gemm(false, false, tokens, d, M, 1, dAct, M, ws.keys.p + b * M * d, d, 1, dxb, d)
            gemm(true, false, M, d, tokens, 1, dAct, M, xb, d, 0, dk, d)
        }
        // The parameter gradients in sample order; then dP = fs (dK + dV) in dProj.
        for b in 0..<batch {
            let dk = ws.proj.p + b * M * d, dvb = ws.dProj.p + b * M * d
            Vec.axpy(1, dk, gk, M * d)
            Vec.axpy(1, dvb, gv, M * d)
            let img: Float = samples[b].features == nil ? 0 : fs
            for i in 0..<(M * d) { dvb[i] = img * (dk[i] + dvb[i]) }
        }
        // memory() left h = SiLU(pre_l) in ws.h, which the projector backward needs.
        let alpha = ws.alpha.p + l * batch * S
        let dAlpha = projectorBackward(pre: ws.pre.p + l * bm * r, alpha: alpha)
        guard routed else { return }
        let w = p("router.weight") + l * S * d
        let gw = g("router.weight") + l * S * d, gb = g("router.bias") + l * S
        for b in 0..<batch {
            let a = alpha + b * S, u = ws.u.p + (l * batch + b) * d
            var inner: Float = 0
            for j in 0..<S { inner += a[j] * dAlpha[b * S + j] }
            let du = ws.small.p
            du.update(repeating: 0, count: d)
            for j in 0..<S {
                let dg = a[j] * (dAlpha[b * S + j] - inner)
                gb[j] += dg
                Vec.axpy(dg, u, gw + j * d, d)
                Vec.axpy(dg, w + j * d, du, d)
            }
            let n = samples[b].promptCount
            guard n > 0 else { continue }
            let share = 1 / Float(n)
            for t in 0..<n { Vec.axpy(share, du, dX + (b * tokens + t) * d, d) }
        }
    }

    // MARK: concat (LLaVA): projected features as the first M input embeddings

    /// Writes P(F) [M, d] for each sample into `embeddings` rows b*(M+T) ..< b*(M+T)+M (zeros without an
    /// image). `stride` is the rows per sample in `embeddings` (M + T).
    public func concatEmbeddings(into embeddings: UnsafeMutablePointer<Float>, stride: Int) {
        precondition(config.fusion == .concat)
        mixFc1(alpha: nil, into: ws.pre.p)
        projectorOut(pre: ws.pre.p)
        for b in 0..<batch {
            let dst = embeddings + b * stride * d
            if samples[b].features == nil { dst.update(repeating: 0, count: M * d) } else { dst.update(from: ws.proj.p + b * M * d, count: M * d) }
        }
    }

    /// Backward of `concatEmbeddings` from the input-embedding gradient; adds projector gradients.
    public func concatBackward(dEmbeddings: UnsafePointer<Float>, stride: Int) {
        precondition(config.fusion == .concat)
        for b in 0..<batch {
            let dst = ws.dProj.p + b * M * d
            if samples[b].features == nil { dst.update(repeating: 0, count: M * d) } else { dst.update(from: dEmbeddings + b * stride * d, count: M * d) }
        }
        Activation.silu.forward(ws.pre.p, ws.h.p, count: batch * M * r)
        _ = projectorBackward(pre: ws.pre.p, alpha: nil)
    }
}

// MARK: small kernels (the fuser's own; shapes are tiny next to the backbone's)

/// A reusable scratch buffer, reallocated only when its size changes.
/// Scratch floats that grow to the largest size asked for and are reused below it (micro-batches vary
/// in length; their contents are written before they are read).
final class Buffer {
    private(set) var p = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private(set) var count = 0
    private var capacity = 1
    deinit { p.deallocate() }
    func resize(_ n: Int) {
        if n > capacity {
            p.deallocate()
            p = .allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            capacity = n
        }
        count = n
    }
    func zero() { p.update(repeating: 0, count: count) }
}

/// act = silu(s) * mask (mask nil: 1).
private func siluTimes(_ s: UnsafePointer<Float>, _ mask: UnsafePointer<Float>?, into act: UnsafeMutablePointer<Float>, count: Int) {
    Activation.silu.forward(s, act, count: count)
    if let mask { for i in 0..<count { act[i] *= mask[i] } }
}

/// dAct *= mask * silu'(s) (mask nil: 1).
private func siluGradTimes(_ s: UnsafePointer<Float>, _ mask: UnsafePointer<Float>?, into dAct: UnsafeMutablePointer<Float>, count: Int) {
    if let mask { for i in 0..<count { dAct[i] *= mask[i] } }
    Activation.silu.backward(s, dy: dAct, dx: dAct, count: count)
}

/// Row-major sgemm in the fuser's positional shorthand: C = alpha op(A) op(B) + beta C.
@inline(__always) private func gemm(_ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                                    _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                                    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
              beta: beta, c: c, ldc: ldc)
}

private func colSum(_ x: UnsafePointer<Float>, rows: Int, cols: Int, into y: UnsafeMutablePointer<Float>) {
    for i in 0..<rows { Vec.add(x + i * cols, y, cols) }
}
