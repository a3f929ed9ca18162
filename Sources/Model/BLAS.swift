import COpenBLAS

/// The only file that touches OpenBLAS. Everything is row-major; `lda`/`ldb`/`ldc` are row strides.
public enum BLAS {
    /// Sets OpenBLAS's thread count. Part of the determinism contract (DESIGN.md §6): sgemm results
    /// change with it for some shapes, so the job config fixes it.
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C. With `beta == 0`, C may be uninitialised.
    /// op(A) is A[m,k] (row stride lda) or, with `transA`, the transpose of A[k,m]; the same for B.
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            for i in 0..<m {
                let row = c + i * ldc
                if beta == 0 { row.update(repeating: 0, count: n) } else { for j in 0..<n { row[j] *= beta } }
            }
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}
