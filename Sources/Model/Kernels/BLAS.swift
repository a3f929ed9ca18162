import COpenBLAS
import Dispatch

/// The only file that touches OpenBLAS. Everything is row-major; `lda`/`ldb`/`ldc` are row strides.
///
/// Threading is ours, not OpenBLAS's: OpenBLAS always runs one thread, and `gemm` splits a large product
/// into `threads` row (or column) slices run side by side. OpenBLAS's own threads busy-wait in
/// `sched_yield` between calls, which starved the per-head and per-sample work that runs on our threads
/// between the big GEMMs; with one owner of the cores that contention is gone. Drive BLAS from one thread
/// at a time (the compute thread); `parallel` fans out from there.
public enum BLAS {
    nonisolated(unsafe) private static var lanes = 1
    nonisolated(unsafe) private static var inParallel = false
    private static let singleThreaded: Void = { openblas_set_num_threads(1) }()

    /// Sets the compute thread count. Part of the determinism contract (DESIGN.md §6): how a product is
    /// split over threads changes its last bits for some shapes, so the job config fixes it.
    public static func setThreads(_ n: Int) {
        _ = singleThreaded
        lanes = max(1, n)
    }

    public static var threads: Int { lanes }

    /// Products below this many multiply-adds run on one thread: splitting costs more than it saves.
    static let splitThreshold = 1 << 21

    /// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C. With `beta == 0`, C may be uninitialised.
    /// op(A) is A[m,k] (row stride lda) or, with `transA`, the transpose of A[k,m]; the same for B.
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        _ = singleThreaded
        if m == 0 || n == 0 { return }
        if k == 0 {
            for i in 0..<m {
                let row = c + i * ldc
                if beta == 0 { row.update(repeating: 0, count: n) } else { for j in 0..<n { row[j] *= beta } }
            }
            return
        }
        let parts = inParallel ? 1 : min(lanes, max(1, m * n * k / splitThreshold))
        guard parts > 1 else {
            sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
        }
        // Slice the larger output dimension, on 16-row/column boundaries (the sgemm kernels' unroll).
        let byRows = m >= n
        let extent = byRows ? m : n, unit = 16
        let units = (extent + unit - 1) / unit
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let lo = min(extent, part * units / parts * unit), hi = min(extent, (part + 1) * units / parts * unit)
            guard hi > lo else { return }
            if byRows {
                let aSlice = transA ? a + lo : a + lo * lda
                sgemm(transA, transB, hi - lo, n, k, alpha, aSlice, lda, b, ldb, beta, c + lo * ldc, ldc)
            } else {
                let bSlice = transB ? b + lo * ldb : b + lo
                sgemm(transA, transB, m, hi - lo, k, alpha, a, lda, bSlice, ldb, beta, c + lo, ldc)
            }
        }
    }

    /// Columns of C per item of ``gemmFewRows(m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)``.
    static let fewRowsPanel = 64

    /// C[m,n] = alpha * A[m,k] * B[n,k]ᵀ + beta * C for a few rows of A against a large B (a weight in
    /// PyTorch's [out, in] layout): a decode step's one position per sample. For such a call OpenBLAS
    /// spends most of its time packing all of B, more than on the product; products of 64 columns of C
    /// each skip that (its small-matrix kernels), measured 1.9x faster here on 8 rows of the bench LLaMA's
    /// weights (12 ms a step against 23 ms, one thread), near the time to stream the weights once. The
    /// panels are the items of ``parallel(_:maxLanes:_:)``, so the result does not depend on the thread
    /// count. With `beta == 0`, C may be uninitialised.
    public static func gemmFewRows(m: Int, n: Int, k: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                                   b: UnsafePointer<Float>, ldb: Int, beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        let panels = (n + fewRowsPanel - 1) / fewRowsPanel
        parallel(panels) { p, _ in
            let j = p * fewRowsPanel, width = Swift.min(fewRowsPanel, n - j)
            gemm(transB: true, m: m, n: width, k: k, alpha: alpha, a: a, lda: lda, b: b + j * ldb, ldb: ldb, beta: beta,
                 c: c + j, ldc: ldc)
        }
    }

    @inline(__always) private static func sgemm(_ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                                                _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                                                _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// OpenBLAS's own multi-threaded sgemm on `threads` threads, for measuring the ceiling the rest is
    /// compared against. Not for the model: it leaves OpenBLAS's threads spinning.
    public static func referenceGemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                                     c: UnsafeMutablePointer<Float>, ldc: Int) {
        _ = singleThreaded
        openblas_set_num_threads(Int32(lanes))
        sgemm(transA, transB, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)
        openblas_set_num_threads(1)
    }

    /// Runs `body(item, lane)` for every item in 0..<count, the items split into contiguous runs over
    /// up to `maxLanes` threads (and at most `threads`, the job's compute threads); GEMMs inside run
    /// whole on the thread that calls them. `lane` (0..<lanes) picks the caller's per-thread scratch.
    ///
    /// This is how many small independent products (attention per (sample, head), the visual memory per
    /// sample) use every core. Every item's arithmetic is the same whichever lane runs it and however
    /// many lanes there are, so those results are bitwise independent of the thread count. `body` must
    /// write only to memory of its own item or lane. A nested call runs on the calling lane.
    public static func parallel(_ count: Int, maxLanes: Int = .max, _ body: (_ item: Int, _ lane: Int) -> Void) {
        _ = singleThreaded
        let n = max(1, min(maxLanes, inParallel ? 1 : lanes, count))
        guard n > 1 else {
            let outer = inParallel
            inParallel = true
            defer { inParallel = outer }
            for i in 0..<count { body(i, 0) }
            return
        }
        inParallel = true
        defer { inParallel = false }
        DispatchQueue.concurrentPerform(iterations: n) { lane in
            for i in (lane * count / n)..<((lane + 1) * count / n) { body(i, lane) }
        }
    }
}
