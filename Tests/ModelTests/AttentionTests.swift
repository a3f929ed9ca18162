import Foundation
import Model
import TestSupport
import Testing

/// Scalar-loop attention in double: the reference for the GEMM version.
func naiveAttention(_ s: AttentionShape, q: [Float], k: [Float], v: [Float], mask: [Float]?) -> [Float] {
    let T = s.length, hd = s.headDim, qs = s.heads * hd, ks = s.kvHeads * hd, group = s.heads / s.kvHeads
    var out = [Float](repeating: 0, count: s.batch * T * qs)
    for b in 0..<s.batch {
        for h in 0..<s.heads {
            let kh = h / group
            for i in 0..<T {
                var allowed: [Int] = []
                for j in 0..<T where (!s.causal || j <= i) && (mask == nil || mask![b * T + j] != 0) { allowed.append(j) }
                if allowed.isEmpty { continue }
                var sc = allowed.map { j -> Double in
                    var d = 0.0
                    for c in 0..<hd { d += Double(q[(b * T + i) * qs + h * hd + c]) * Double(k[(b * T + j) * ks + kh * hd + c]) }
                    return d * Double(s.scale)
                }
                let m = sc.max()!
                sc = sc.map { exp($0 - m) }
                let z = sc.reduce(0, +)
                for c in 0..<hd {
                    var o = 0.0
                    for (n, j) in allowed.enumerated() { o += sc[n] / z * Double(v[(b * T + j) * ks + kh * hd + c]) }
                    out[(b * T + i) * qs + h * hd + c] = Float(o)
                }
            }
        }
    }
    return out
}

@Suite("attention") struct AttentionTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var heads, kvHeads, headDim: Int
        var causal: Bool
        var masked: Bool
        var testDescription: String { "H=\(heads) Hkv=\(kvHeads) hd=\(headDim) causal=\(causal) mask=\(masked)" }
    }

    // Batch 0's mask hides a prefix position and right padding; with causal masking, its query 0 then
    // has no allowed key at all (the empty-row case).
    static let mask: [Float] = [0, 1, 1, 1, 0, 1, 1, 1, 1, 1]

    @Test("forward matches naive attention; backward matches finite differences", arguments: [
        Case(heads: 4, kvHeads: 2, headDim: 3, causal: true, masked: true),
        Case(heads: 2, kvHeads: 2, headDim: 4, causal: false, masked: true),
        Case(heads: 3, kvHeads: 1, headDim: 5, causal: true, masked: false),
        Case(heads: 2, kvHeads: 1, headDim: 2, causal: false, masked: false),
    ])
    func attention(c: Case) {
        var rng = TestRNG(11)
        let s = AttentionShape(batch: 2, length: 5, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, causal: c.causal)
        let nq = 2 * 5 * c.heads * c.headDim, nk = 2 * 5 * c.kvHeads * c.headDim
        let q = rng.array(nq, 1.5), k = rng.array(nk, 1.5), v = rng.array(nk), wt = rng.array(nq)
        let mask: [Float]? = c.masked ? AttentionTests.mask : nil
        var probs = [Float](repeating: 0, count: s.probsCount)
        func run(_ q: [Float], _ k: [Float], _ v: [Float], save: Bool = false) -> [Float] {
            var out = [Float](repeating: .nan, count: nq)
            var saved = [Float](repeating: .nan, count: s.probsCount)
            var scratch = [Float](repeating: 0, count: s.scratchPerLane(backward: false))
            let m = mask ?? []
            m.withUnsafeBufferPointer { mp in
                scratch.withUnsafeMutableBufferPointer { sp in
                    saved.withUnsafeMutableBufferPointer { pp in
                        Attention.forward(s, q: q, k: k, v: v, keyMask: mask == nil ? nil : mp.baseAddress!,
                                          scratch: sp, savedProbs: save ? pp.baseAddress! : nil, out: &out)
                    }
                }
            }
            if save { probs = saved }
            return out
        }
        let out = run(q, k, v, save: true)
        #expect(maxAbsDiff(out, naiveAttention(s, q: q, k: k, v: v, mask: mask)) < 1e-5)
        #expect(maxAbsDiff(run(q, k, v, save: false), out) == 0)

        var dq = [Float](repeating: .nan, count: nq), dk = [Float](repeating: .nan, count: nk), dv = dk
        var scratch = [Float](repeating: 0, count: s.scratchPerLane(backward: true))
        scratch.withUnsafeMutableBufferPointer { sp in
            Attention.backward(s, q: q, k: k, v: v, keyMask: nil, probs: probs, dOut: wt, dq: &dq, dk: &dk, dv: &dv, scratch: sp)
        }
        // Recomputing the probabilities (no saved probs) gives the same gradients.
        var dq2 = dq, dk2 = dk, dv2 = dv
        (mask ?? []).withUnsafeBufferPointer { mp in
            scratch.withUnsafeMutableBufferPointer { sp in
                Attention.backward(s, q: q, k: k, v: v, keyMask: mask == nil ? nil : mp.baseAddress!, probs: nil, dOut: wt,
                                   dq: &dq2, dk: &dk2, dv: &dv2, scratch: sp)
            }
        }
        #expect(maxAbsDiff(dq2, dq) < 1e-6 && maxAbsDiff(dk2, dk) < 1e-6 && maxAbsDiff(dv2, dv) < 1e-6)
        #expect(gradientError(dq, numericGradient(q, step: fdStep) { weightedSum(run($0, k, v), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
        #expect(gradientError(dk, numericGradient(k, step: fdStep) { weightedSum(run(q, $0, v), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
        #expect(gradientError(dv, numericGradient(v, step: fdStep) { weightedSum(run(q, k, $0), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
        if c.causal && c.masked {
            // Query 0 of batch 0 attends to nothing: zero output, zero gradient.
            let qs = c.heads * c.headDim
            #expect(out[0..<qs].allSatisfy { $0 == 0 })
            #expect(dq[0..<qs].allSatisfy { $0 == 0 })
        }
    }

    @Test("causal row blocks (T = 150: three blocks, the last partial) match naive attention and finite differences; the thread count changes no bit")
    func blocked() {
        var rng = TestRNG(5)
        let T = 150
        let s = AttentionShape(batch: 2, length: T, heads: 4, kvHeads: 2, headDim: 8, causal: true)
        let nq = 2 * T * 32, nk = 2 * T * 16
        let q = rng.array(nq, 1.5), k = rng.array(nk, 1.5), v = rng.array(nk), wt = rng.array(nq)
        // Sample 0: its first key masked and 20 padded keys; sample 1: every key.
        var mask = [Float](repeating: 1, count: 2 * T)
        mask[0] = 0
        for t in (T - 20)..<T { mask[t] = 0 }
        var scratch = [Float](repeating: 0, count: 2 * s.scratchPerLane(backward: true))
        func run(_ q: [Float], _ k: [Float], _ v: [Float], threads: Int = 2) -> [Float] {
            BLAS.setThreads(threads)
            defer { BLAS.setThreads(1) }
            var out = [Float](repeating: .nan, count: nq)
            scratch.withUnsafeMutableBufferPointer { sp in
                Attention.forward(s, q: q, k: k, v: v, keyMask: mask, scratch: sp, out: &out)
            }
            return out
        }
        func grads(threads: Int) -> (dq: [Float], dk: [Float], dv: [Float]) {
            BLAS.setThreads(threads)
            defer { BLAS.setThreads(1) }
            var dq = [Float](repeating: .nan, count: nq), dk = [Float](repeating: .nan, count: nk), dv = dk
            scratch.withUnsafeMutableBufferPointer { sp in
                Attention.backward(s, q: q, k: k, v: v, keyMask: mask, probs: nil, dOut: wt, dq: &dq, dk: &dk, dv: &dv, scratch: sp)
            }
            return (dq, dk, dv)
        }
        let out = run(q, k, v)
        #expect(maxAbsDiff(out, naiveAttention(s, q: q, k: k, v: v, mask: mask)) < 1e-5)
        #expect(run(q, k, v, threads: 1) == out)
        let g = grads(threads: 2), g1 = grads(threads: 1)
        #expect(g1.dq == g.dq && g1.dk == g.dk && g1.dv == g.dv)
        // Finite differences on coordinates spread over every block (whole-array differences would take minutes).
        func check(_ analytic: [Float], _ x: [Float], _ loss: ([Float]) -> Double) {
            var worst = 0.0
            for i in stride(from: 7, to: x.count, by: x.count / 40) {
                var xp = x
                xp[i] = x[i] + fdStep
                let hi = loss(xp)
                xp[i] = x[i] - fdStep
                let numeric = (hi - loss(xp)) / Double(2 * fdStep)
                worst = max(worst, abs(Double(analytic[i]) - numeric) / (fdAtol + fdRtol * abs(numeric)))
            }
            #expect(worst <= 1, "worst finite-difference error \(worst)")
        }
        check(g.dq, q) { weightedSum(run($0, k, v), wt) }
        check(g.dk, k) { weightedSum(run(q, $0, v), wt) }
        check(g.dv, v) { weightedSum(run(q, k, $0), wt) }
    }
}
