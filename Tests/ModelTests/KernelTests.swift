import Foundation
import Model
import TestSupport
import Testing

// Tolerance for every finite-difference check here: inputs are O(1), the forward runs in float32 and
// the loss Σ w·y is summed in double. With step h = 1e-2, float32 rounding of the outputs (~1e-7
// relative) contributes ~1e-5 to the difference quotient and the O(h²) truncation ~1e-4 relative, so
// rtol 1e-2 with atol 1e-3 is ~10x above the expected error yet far below any real bug (a wrong term
// is O(1)). Gradients are O(1) by construction.
let fdStep: Float = 1e-2
let fdRtol = 1e-2
let fdAtol = 1e-3

@Suite("kernels") struct KernelTests {
    @Test("gemm matches a naive product for all transpose combinations and strides, beta accumulates")
    func gemm() {
        var rng = TestRNG(1)
        let m = 5, n = 7, k = 3
        for ta in [false, true] {
            for tb in [false, true] {
                let lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3
                let a = rng.array((ta ? k : m) * lda), b = rng.array((tb ? n : k) * ldb)
                var c = rng.array(m * ldc)
                let c0 = c
                a.withPtr { ap in b.withPtr { bp in c.withUnsafeMutableBufferPointer { cp in
                    BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: ap, lda: lda, b: bp, ldb: ldb,
                              beta: 2, c: cp.baseAddress!, ldc: ldc)
                } } }
                for i in 0..<m {
                    for j in 0..<n {
                        var s: Float = 0
                        for p in 0..<k { s += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]) }
                        #expect(abs(c[i * ldc + j] - (0.5 * s + 2 * c0[i * ldc + j])) < 1e-5)
                    }
                }
            }
        }
    }

    @Test("linear backward (dx, dW, db) matches finite differences")
    func linear() {
        var rng = TestRNG(2)
        let rows = 4, inF = 5, outF = 3
        let x = rng.array(rows * inF), w = rng.array(outF * inF), b = rng.array(outF), wt = rng.array(rows * outF)
        func run(_ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: rows * outF)
            x.withPtr { xp in w.withPtr { wp in b.withPtr { bp in y.withUnsafeMutableBufferPointer {
                Linear.forward(x: xp, rows: rows, inFeatures: inF, weight: wp, bias: bp, outFeatures: outF, y: $0.baseAddress!)
            } } } }
            return y
        }
        var dx = [Float](repeating: 7, count: rows * inF), dw = [Float](repeating: 0, count: outF * inF), db = [Float](repeating: 0, count: outF)
        wt.withPtr { dyp in x.withPtr { xp in w.withPtr { wp in
            dx.withUnsafeMutableBufferPointer { dxp in dw.withUnsafeMutableBufferPointer { dwp in db.withUnsafeMutableBufferPointer { dbp in
                Linear.backward(dy: dyp, x: xp, rows: rows, inFeatures: inF, weight: wp, outFeatures: outF,
                                dx: dxp.baseAddress!, accumulate: false, dWeight: dwp.baseAddress!, dBias: dbp.baseAddress!)
            } } }
        } } }
        #expect(gradientError(dx, numericGradient(x, step: fdStep) { weightedSum(run($0, w, b), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
        #expect(gradientError(dw, numericGradient(w, step: fdStep) { weightedSum(run(x, $0, b), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
        #expect(gradientError(db, numericGradient(b, step: fdStep) { weightedSum(run(x, w, $0), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
    }

    @Test("layer norm backward (dx, dgamma, dbeta) matches finite differences", arguments: [5, 19])
    func layerNorm(dim: Int) {
        var rng = TestRNG(3)
        let rows = 3
        let x = rng.array(rows * dim, 2).map { $0 + 0.5 }, g = rng.array(dim), be = rng.array(dim), wt = rng.array(rows * dim)
        func run(_ x: [Float], _ g: [Float], _ be: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: rows * dim)
            x.withPtr { xp in g.withPtr { gp in be.withPtr { bp in y.withUnsafeMutableBufferPointer {
                LayerNorm.forward(x: xp, rows: rows, dim: dim, gamma: gp, beta: bp, eps: 1e-5, y: $0.baseAddress!)
            } } } }
            return y
        }
        var mean = [Float](repeating: 0, count: rows), rstd = mean
        var y = [Float](repeating: 0, count: rows * dim)
        x.withPtr { xp in g.withPtr { gp in be.withPtr { bp in
            LayerNorm.forward(x: xp, rows: rows, dim: dim, gamma: gp, beta: bp, eps: 1e-5, y: &y, mean: &mean, rstd: &rstd)
        } } }
        #expect(maxAbsDiff(y, run(x, g, be)) == 0)
        var dx = [Float](repeating: 0, count: rows * dim), dg = [Float](repeating: 0, count: dim), db = dg
        LayerNorm.backward(dy: wt, x: x, rows: rows, dim: dim, gamma: g, mean: mean, rstd: rstd, dx: &dx,
                           accumulate: false, dGamma: &dg, dBeta: &db)
        #expect(gradientError(dx, numericGradient(x, step: fdStep) { weightedSum(run($0, g, be), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
        #expect(gradientError(dg, numericGradient(g, step: fdStep) { weightedSum(run(x, $0, be), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
        #expect(gradientError(db, numericGradient(be, step: fdStep) { weightedSum(run(x, g, $0), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
    }

    @Test("RMSNorm forward is x·rsqrt(mean x²+eps)·w and its dx matches finite differences", arguments: [6, 21])
    func rmsNorm(dim: Int) {
        var rng = TestRNG(4)
        let rows = 3
        let x = rng.array(rows * dim), w = rng.array(dim), wt = rng.array(rows * dim)
        func run(_ x: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: rows * dim)
            RMSNorm.forward(x: x, rows: rows, dim: dim, weight: w, eps: 1e-6, y: &y)
            return y
        }
        let y = run(x)
        for r in 0..<rows {
            var ss = 0.0
            for i in 0..<dim { ss += Double(x[r * dim + i] * x[r * dim + i]) }
            let rs = 1 / (ss / Double(dim) + 1e-6).squareRoot()
            for i in 0..<dim { #expect(abs(Double(y[r * dim + i]) - Double(x[r * dim + i]) * rs * Double(w[i])) < 1e-5) }
        }
        var rstd = [Float](repeating: 0, count: rows), tmp = y
        RMSNorm.forward(x: x, rows: rows, dim: dim, weight: w, eps: 1e-6, y: &tmp, rstd: &rstd)
        var dx = [Float](repeating: 1, count: rows * dim)
        RMSNorm.backward(dy: wt, x: x, rows: rows, dim: dim, weight: w, rstd: rstd, dx: &dx, accumulate: true)
        let num = numericGradient(x, step: fdStep) { weightedSum(run($0), wt) }
        #expect(gradientError(dx.map { $0 - 1 }, num, rtol: fdRtol, atol: fdAtol) <= 1)
    }

    @Test("activations: values at known points and derivatives match finite differences",
          arguments: [Activation.silu, .gelu, .quickGelu])
    func activations(act: Activation) {
        // Known values: gelu(1) = 0.8413447, silu(1) = 0.7310586, quick_gelu(1) = 1/(1+e^-1.702) = 0.8457957
        let expected: Float = act == .gelu ? 0.8413447 : act == .silu ? 0.7310586 : 0.8457957
        #expect(abs(act.value(1) - expected) < 1e-6)
        var rng = TestRNG(5)
        let x = rng.array(40, 4), wt = rng.array(40)
        func run(_ x: [Float]) -> [Float] { var y = x; act.forward(x, &y, count: x.count); return y }
        var dx = [Float](repeating: 0, count: 40)
        act.backward(x, dy: wt, dx: &dx, count: 40)
        #expect(gradientError(dx, numericGradient(x, step: 1e-2) { weightedSum(run($0), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
    }

    @Test("SwiGLU backward matches finite differences")
    func swiglu() {
        var rng = TestRNG(6)
        let n = 30
        let g = rng.array(n, 3), u = rng.array(n, 2), wt = rng.array(n)
        func run(_ g: [Float], _ u: [Float]) -> [Float] { var y = g; SwiGLU.forward(gate: g, up: u, out: &y, count: n); return y }
        var dg = wt, du = [Float](repeating: 0, count: n)
        SwiGLU.backward(gate: g, up: u, dAct: &dg, dUp: &du, count: n)
        #expect(gradientError(dg, numericGradient(g, step: fdStep) { weightedSum(run($0, u), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
        #expect(gradientError(du, numericGradient(u, step: fdStep) { weightedSum(run(g, $0), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
    }

    @Test("row softmax sums to one and its backward matches finite differences")
    func softmax() {
        var rng = TestRNG(7)
        let rows = 3, n = 9
        let x = rng.array(rows * n, 3), wt = rng.array(rows * n)
        func run(_ x: [Float]) -> [Float] { var y = x; Softmax.rows(&y, rows: rows, n: n); return y }
        let y = run(x)
        for r in 0..<rows { #expect(abs(y[(r * n)..<(r * n + n)].reduce(0, +) - 1) < 1e-6) }
        var dx = [Float](repeating: 0, count: rows * n)
        Softmax.backward(y: y, dy: wt, dx: &dx, rows: rows, n: n)
        #expect(gradientError(dx, numericGradient(x, step: fdStep) { weightedSum(run($0), wt) }, rtol: fdRtol, atol: fdAtol) <= 1)
    }

    @Test("rotary embedding follows rotate_half, preserves norms, and inverse undoes it")
    func rotary() {
        var rng = TestRNG(8)
        let rows = 3, heads = 2, hd = 6
        let x = rng.array(rows * heads * hd)
        let pos: [Int32] = [0, 5, 17]
        var c = [Float](repeating: 0, count: rows * hd / 2), s = c
        Rotary.tables(positions: pos, count: rows, headDim: hd, theta: 10000, cos: &c, sin: &s)
        var y = x
        Rotary.apply(&y, rows: rows, heads: heads, headDim: hd, cos: c, sin: s)
        for r in 0..<rows {
            for h in 0..<heads {
                let base = (r * heads + h) * hd
                for i in 0..<(hd / 2) {
                    let ang = Double(pos[r]) / pow(10000, Double(2 * i) / Double(hd))
                    let a = Double(x[base + i]), b = Double(x[base + i + hd / 2])
                    #expect(abs(Double(y[base + i]) - (a * cos(ang) - b * sin(ang))) < 1e-5)
                    #expect(abs(Double(y[base + i + hd / 2]) - (b * cos(ang) + a * sin(ang))) < 1e-5)
                }
            }
        }
        Rotary.apply(&y, rows: rows, heads: heads, headDim: hd, cos: c, sin: s, inverse: true)
        #expect(maxAbsDiff(y, x) < 1e-6)
    }
}
