import Dispatch

/// The machine's ceiling for this workload: OpenBLAS's own sgemm, C = A·Bᵀ at 2048³, on its own threads,
/// in GFLOP/s (the better of two runs: on a shared machine one run is easily descheduled). Figures of
/// achieved speed are reported as a fraction of it, measured next to them.
public enum SgemmCeiling {
    public static func measure(runs: Int = 2) -> Double {
        let n = 2048
        let a = Tensor(zeros: [n, n]), b = Tensor(zeros: [n, n]), c = Tensor(zeros: [n, n])
        var rng = SplitMix64(state: 2048)
        for t in [a, b] { for i in 0..<t.count { t.data[i] = Float(rng.next() >> 40) / Float(1 << 24) - 0.5 } }
        var best = 0.0
        for _ in 0..<runs {
            let start = DispatchTime.now().uptimeNanoseconds
            BLAS.referenceGemm(transB: true, m: n, n: n, k: n, a: a.data, lda: n, b: b.data, ldb: n, c: c.data, ldc: n)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = max(best, 2 * Double(n * n * n) / seconds / 1e9)
        }
        return best
    }
}
