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
}

/// Scaled dot-product attention, batched as two GEMMs per (batch, head).
///
/// Key mask [B, T]: nonzero = the key may be attended (covers right padding and masked-out prefixes).
/// A query row whose allowed key set is empty outputs zeros and gets zero gradient.
public enum Attention {
    /// out = softmax(scale * Q Kᵀ + mask) V. `probs` receives the probabilities: for every (b, h) at
    /// offset (b * heads + h) * T * T when `saveProbs` (the backward needs them), else a single T * T
    /// scratch reused for each head.
    public static func forward(_ s: AttentionShape, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                               v: UnsafePointer<Float>, keyMask: UnsafePointer<Float>?,
                               probs: UnsafeMutablePointer<Float>, saveProbs: Bool,
                               out: UnsafeMutablePointer<Float>) {
        let T = s.length, hd = s.headDim, group = s.heads / s.kvHeads
        let qs = s.heads * hd, ks = s.kvHeads * hd
        for b in 0..<s.batch {
            for h in 0..<s.heads {
                let p = saveProbs ? probs + (b * s.heads + h) * T * T : probs
                let qp = q + b * T * qs + h * hd
                let kp = k + b * T * ks + (h / group) * hd
                let vp = v + b * T * ks + (h / group) * hd
                BLAS.gemm(transB: true, m: T, n: T, k: hd, alpha: s.scale, a: qp, lda: qs, b: kp, ldb: ks,
                          beta: 0, c: p, ldc: T)
                maskedSoftmax(p, length: T, causal: s.causal, mask: keyMask.map { $0 + b * T })
                BLAS.gemm(m: T, n: hd, k: T, a: p, lda: T, b: vp, ldb: ks, beta: 0,
                          c: out + b * T * qs + h * hd, ldc: qs)
            }
        }
    }

    /// Softmax of each row over its allowed keys; disallowed entries and empty rows become 0.
    static func maskedSoftmax(_ p: UnsafeMutablePointer<Float>, length T: Int, causal: Bool, mask: UnsafePointer<Float>?) {
        for i in 0..<T {
            let row = p + i * T
            let limit = causal ? i + 1 : T
            var m = -Float.infinity
            if let mask {
                for j in 0..<limit where mask[j] != 0 { m = max(m, row[j]) }
            } else {
                for j in 0..<limit { m = max(m, row[j]) }
            }
            if m == -Float.infinity {
                row.update(repeating: 0, count: T)
                continue
            }
            var sum: Float = 0
            for j in 0..<limit {
                if let mask, mask[j] == 0 { row[j] = 0; continue }
                let e = Foundation.exp(row[j] - m)
                row[j] = e
                sum += e
            }
            if limit < T { (row + limit).update(repeating: 0, count: T - limit) }
            Vec.scale(row, 1 / sum, limit)
        }
    }

    /// Backward. Writes dq; writes dk and dv (zeroed here, then accumulated over the query heads of each
    /// group). With `probs` (saved by `forward` for every head) they are read; with nil they are recomputed
    /// per head from q, k and `keyMask` (the same GEMM and softmax as the forward), which keeps training
    /// memory at O(T²) instead of O(layers · B · heads · T²). `scratch` holds 2 * T * T floats.
    public static func backward(_ s: AttentionShape, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                v: UnsafePointer<Float>, keyMask: UnsafePointer<Float>?, probs: UnsafePointer<Float>?,
                                dOut: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>,
                                dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                                scratch: UnsafeMutablePointer<Float>) {
        let T = s.length, hd = s.headDim, group = s.heads / s.kvHeads
        let qs = s.heads * hd, ks = s.kvHeads * hd
        let recomputed = scratch + T * T
        dk.update(repeating: 0, count: s.batch * T * ks)
        dv.update(repeating: 0, count: s.batch * T * ks)
        for b in 0..<s.batch {
            for h in 0..<s.heads {
                let qp = q + b * T * qs + h * hd, dqp = dq + b * T * qs + h * hd
                let kvOff = b * T * ks + (h / group) * hd
                let dop = dOut + b * T * qs + h * hd
                let p: UnsafePointer<Float>
                if let probs {
                    p = probs + (b * s.heads + h) * T * T
                } else {
                    BLAS.gemm(transB: true, m: T, n: T, k: hd, alpha: s.scale, a: qp, lda: qs, b: k + kvOff, ldb: ks,
                              beta: 0, c: recomputed, ldc: T)
                    maskedSoftmax(recomputed, length: T, causal: s.causal, mask: keyMask.map { $0 + b * T })
                    p = UnsafePointer(recomputed)
                }
                // dP = dO Vᵀ
                BLAS.gemm(transB: true, m: T, n: T, k: hd, a: dop, lda: qs, b: v + kvOff, ldb: ks,
                          beta: 0, c: scratch, ldc: T)
                // dS = P ⊙ (dP - rowsum(P ⊙ dP)); rows with P = 0 give 0.
                Softmax.backward(y: p, dy: scratch, dx: scratch, rows: T, n: T)
                // dQ = scale dS K; dK += scale dSᵀ Q; dV += Pᵀ dO
                BLAS.gemm(m: T, n: hd, k: T, alpha: s.scale, a: scratch, lda: T, b: k + kvOff, ldb: ks,
                          beta: 0, c: dqp, ldc: qs)
                BLAS.gemm(transA: true, m: T, n: hd, k: T, alpha: s.scale, a: scratch, lda: T, b: qp, ldb: qs,
                          beta: 1, c: dk + kvOff, ldc: ks)
                BLAS.gemm(transA: true, m: T, n: hd, k: T, a: p, lda: T, b: dop, ldb: qs,
                          beta: 1, c: dv + kvOff, ldc: ks)
            }
        }
    }
}
