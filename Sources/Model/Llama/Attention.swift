import Foundation

/// The shape of one multi-head attention call. Queries are [B, T, heads * headDim], keys and values
/// [B, T, kvHeads * headDim] (grouped-query: query head h reads key/value head h / (heads / kvHeads)).
public struct AttentionShape: Sendable, Equatable {
    public var batch: Int
    public var length: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var causal: Bool
    public var scale: Float

    public init(batch: Int, length: Int, heads: Int, kvHeads: Int, headDim: Int, causal: Bool, scale: Float? = nil) {
        precondition(kvHeads > 0 && heads % kvHeads == 0, "heads (\(heads)) must be a multiple of kvHeads (\(kvHeads))")
        self.batch = batch
        self.length = length
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.causal = causal
        self.scale = scale ?? 1 / Float(headDim).squareRoot()
    }

    /// Floats of the saved probabilities for every (batch, head): B * heads * T * T.
    public var probsCount: Int { batch * heads * length * length }

    /// Scratch floats per lane: T * T for the forward, 2 * T * T for the backward.
    public func scratchPerLane(backward: Bool) -> Int { (backward ? 2 : 1) * length * length }

    /// Query rows per block. Causal attention works in row blocks so that a block's products stop at
    /// its last allowed key, skipping most of the masked upper triangle (42% of the work at T = 384).
    var rowBlock: Int { causal ? 64 : length }
}

/// Scaled dot-product attention as GEMMs per (batch, head).
///
/// The work is split over the compute threads by (batch, key/value head): each unit runs its query
/// heads in order with one-thread sgemm (`BLAS.parallel`), so the result does not depend on the thread
/// count. Causal attention skips key blocks after each query block.
///
/// Key mask [B, T]: nonzero = the key may be attended (covers right padding and masked-out prefixes).
/// A query row whose allowed key set is empty outputs zeros and gets zero gradient.
public enum Attention {
    /// out = softmax(scale * Q Kᵀ + mask) V. `scratch` holds `scratchPerLane(backward: false)` floats per
    /// lane (one lane per compute thread; fewer lanes run when it is smaller). With `savedProbs`, every
    /// (b, h)'s probabilities are written there at offset (b * heads + h) * T * T for the backward.
    public static func forward(_ s: AttentionShape, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, keyMask: UnsafePointer<Float>?,
                               scratch: UnsafeMutableBufferPointer<Float>, savedProbs: UnsafeMutablePointer<Float>? = nil,
                               out: UnsafeMutablePointer<Float>) {
        let T = s.length, hd = s.headDim, group = s.heads / s.kvHeads, tt = T * T
        let qs = s.heads * hd, ks = s.kvHeads * hd
        let lanes = savedProbs == nil ? scratch.count / s.scratchPerLane(backward: false) : .max
        precondition(lanes >= 1, "attention scratch holds \(scratch.count) floats; one lane needs \(tt)")
        BLAS.parallel(s.batch * s.kvHeads, maxLanes: lanes) { unit, lane in
            let b = unit / s.kvHeads, g = unit % s.kvHeads
            let kp = k + b * T * ks + g * hd, vp = v + b * T * ks + g * hd
            let mask = keyMask.map { $0 + b * T }
            for h in (g * group)..<((g + 1) * group) {
                let p = savedProbs.map { $0 + (b * s.heads + h) * tt } ?? scratch.baseAddress! + lane * tt
                let qp = q + b * T * qs + h * hd, op = out + b * T * qs + h * hd
                probabilities(s, q: qp, k: kp, mask: mask, into: p)
                forEachBlock(s) { r0, r1, keys in
                    BLAS.gemm(m: r1 - r0, n: hd, k: keys, a: p + r0 * T, lda: T, b: vp, ldb: ks, beta: 0,
                              c: op + r0 * qs, ldc: qs)
                }
            }
        }
    }

    /// Backward. Writes dq, dk and dv (dk and dv sum over the query heads of each group). With `probs`
    /// (saved by `forward`) they are read; with nil they are recomputed per head from q, k and `keyMask`
    /// by the forward's own arithmetic, which keeps training memory at O(T²) per thread instead of
    /// O(layers · B · heads · T²). `scratch` holds `scratchPerLane(backward: true)` floats per lane.
    public static func backward(_ s: AttentionShape, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                v: UnsafePointer<Float>, keyMask: UnsafePointer<Float>?, probs: UnsafePointer<Float>?,
                                dOut: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                                dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                                scratch: UnsafeMutableBufferPointer<Float>) {
        let T = s.length, hd = s.headDim, group = s.heads / s.kvHeads, tt = T * T
        let qs = s.heads * hd, ks = s.kvHeads * hd
        let lanes = scratch.count / s.scratchPerLane(backward: true)
        precondition(lanes >= 1, "attention scratch holds \(scratch.count) floats; one lane needs \(2 * tt)")
        BLAS.parallel(s.batch * s.kvHeads, maxLanes: lanes) { unit, lane in
            let b = unit / s.kvHeads, g = unit % s.kvHeads
            let kvOff = b * T * ks + g * hd
            let kp = k + kvOff, vp = v + kvOff, dkp = dk + kvOff, dvp = dv + kvOff
            let dS = scratch.baseAddress! + lane * 2 * tt, recomputed = dS + tt
            for r in 0..<T {
                (dkp + r * ks).update(repeating: 0, count: hd)
                (dvp + r * ks).update(repeating: 0, count: hd)
            }
            for h in (g * group)..<((g + 1) * group) {
                let qp = q + b * T * qs + h * hd, dqp = dq + b * T * qs + h * hd, dop = dOut + b * T * qs + h * hd
                let p: UnsafePointer<Float>
                if let probs {
                    p = probs + (b * s.heads + h) * tt
                } else {
                    probabilities(s, q: qp, k: kp, mask: keyMask.map { $0 + b * T }, into: recomputed)
                    p = UnsafePointer(recomputed)
                }
                forEachBlock(s) { r0, r1, keys in
                    // dP = dO Vᵀ; dS = P ⊙ (dP - rowsum(P ⊙ dP)) (rows with P = 0 give 0); dQ = scale dS K
                    BLAS.gemm(transB: true, m: r1 - r0, n: keys, k: hd, a: dop + r0 * qs, lda: qs, b: vp, ldb: ks,
                              beta: 0, c: dS + r0 * T, ldc: T)
                    softmaxBackward(y: p + r0 * T, dx: dS + r0 * T, rows: r1 - r0, n: keys, stride: T)
                    BLAS.gemm(m: r1 - r0, n: hd, k: keys, alpha: s.scale, a: dS + r0 * T, lda: T, b: kp, ldb: ks,
                              beta: 0, c: dqp + r0 * qs, ldc: qs)
                }
                // dK += scale dSᵀ Q; dV += Pᵀ dO, by key block over the query rows that may see it.
                forEachBlock(s) { c0, c1, _ in
                    let first = s.causal ? c0 : 0
                    BLAS.gemm(transA: true, m: c1 - c0, n: hd, k: T - first, alpha: s.scale, a: dS + first * T + c0, lda: T,
                              b: qp + first * qs, ldb: qs, beta: 1, c: dkp + c0 * ks, ldc: ks)
                    BLAS.gemm(transA: true, m: c1 - c0, n: hd, k: T - first, a: p + first * T + c0, lda: T,
                              b: dop + first * qs, ldb: qs, beta: 1, c: dvp + c0 * ks, ldc: ks)
                }
            }
        }
    }

    /// Calls body(firstRow, endRow, keys) for each row block; `keys` is the number of leading keys any
    /// row of the block may attend (the block's end when causal, else T).
    @inline(__always) private static func forEachBlock(_ s: AttentionShape, _ body: (Int, Int, Int) -> Void) {
        var r0 = 0
        while r0 < s.length {
            let r1 = min(s.length, r0 + s.rowBlock)
            body(r0, r1, s.causal ? r1 : s.length)
            r0 = r1
        }
    }

    /// P = softmax(scale * Q Kᵀ + mask) for one head into p [T, T] (entries past a row's keys are 0).
    private static func probabilities(_ s: AttentionShape, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                      mask: UnsafePointer<Float>?, into p: UnsafeMutablePointer<Float>) {
        let T = s.length
        forEachBlock(s) { r0, r1, keys in
            BLAS.gemm(transB: true, m: r1 - r0, n: keys, k: s.headDim, alpha: s.scale, a: q + r0 * s.heads * s.headDim,
                      lda: s.heads * s.headDim, b: k, ldb: s.kvHeads * s.headDim, beta: 0, c: p + r0 * T, ldc: T)
            for i in r0..<r1 { maskedSoftmax(p + i * T, limit: s.causal ? i + 1 : T, length: T, mask: mask) }
        }
    }

    /// Softmax of one row over its allowed keys j < limit with mask[j] != 0; disallowed entries, the
    /// rest of the row up to `length`, and rows with no allowed key become 0.
    static func maskedSoftmax(_ row: UnsafeMutablePointer<Float>, limit: Int, length: Int, mask: UnsafePointer<Float>?) {
        if let mask {
            var j = 0
            while j + 8 <= limit {
                var x = load8(row + j)
                x.replace(with: -.infinity, where: load8(mask + j) .== 0)
                store8(x, row + j)
                j += 8
            }
            while j < limit { if mask[j] == 0 { row[j] = -.infinity }; j += 1 }
        }
        let m = Vec.max(row, limit)
        if m == -.infinity {
            row.update(repeating: 0, count: length)
            return
        }
        let sum = Vec.expSum(row, minus: m, limit)   // e^-inf = 0 for the masked keys
        if limit < length { (row + limit).update(repeating: 0, count: length - limit) }
        Vec.scale(row, 1 / sum, limit)
    }

    /// dx = y ⊙ (dx - Σ dx ⊙ y) per row of n, in place, rows `stride` apart.
    private static func softmaxBackward(y: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, n: Int, stride: Int) {
        for r in 0..<rows {
            let yr = y + r * stride, dr = dx + r * stride
            let d = V8(repeating: Vec.dot(yr, dr, n))
            var j = 0
            while j + 8 <= n { store8(load8(yr + j) * (load8(dr + j) - d), dr + j); j += 8 }
            while j < n { dr[j] = yr[j] * (dr[j] - d[0]); j += 1 }
        }
    }
}
