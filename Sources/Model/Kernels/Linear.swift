/// A linear layer in PyTorch's layout: weight [out, in], y = x Wᵀ + b.
public enum Linear {
    /// y[rows, out] = x[rows, in] Wᵀ + b. `y` may be uninitialised.
    public static func forward(x: UnsafePointer<Float>, rows: Int, inFeatures: Int,
                               weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, outFeatures: Int,
                               y: UnsafeMutablePointer<Float>) {
        if let bias {
            for r in 0..<rows { (y + r * outFeatures).update(from: bias, count: outFeatures) }
        }
        BLAS.gemm(transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures,
                  b: weight, ldb: inFeatures, beta: bias == nil ? 0 : 1, c: y, ldc: outFeatures)
    }

    /// Backward of `forward`. dx = dy W (added to `dx` when `accumulate`, else written);
    /// dWeight += dyᵀ x and dBias += Σ_rows dy (always accumulated; pass nil for frozen weights).
    public static func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>?, rows: Int, inFeatures: Int,
                                weight: UnsafePointer<Float>, outFeatures: Int,
                                dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                                dWeight: UnsafeMutablePointer<Float>? = nil, dBias: UnsafeMutablePointer<Float>? = nil) {
        if let dx {
            BLAS.gemm(m: rows, n: inFeatures, k: outFeatures, a: dy, lda: outFeatures, b: weight, ldb: inFeatures,
                      beta: accumulate ? 1 : 0, c: dx, ldc: inFeatures)
        }
        if let dWeight, let x {
            BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: rows, a: dy, lda: outFeatures,
                      b: x, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures)
        }
        if let dBias {
            for r in 0..<rows { Vec.add(dy + r * outFeatures, dBias, outFeatures) }
        }
    }
}
