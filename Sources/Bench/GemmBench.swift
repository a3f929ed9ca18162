import Foundation
import Model

/// OpenBLAS sgemm rates: the machine's ceiling (square 2048 on OpenBLAS's own threads) and the shapes a
/// training step runs, both on OpenBLAS's threads and as the model runs them (`BLAS.gemm` slicing the
/// product over the compute threads, OpenBLAS on one thread in each).
enum GemmBench {
    /// Row-major C[m,n] = A[m,k]·Bᵀ (every linear layer's layout): 2mnk FLOPs.
    final class Problem {
        let m: Int, n: Int, k: Int
        let a: Tensor, b: Tensor, c: Tensor
        init(m: Int, n: Int, k: Int) {
            self.m = m; self.n = n; self.k = k
            var rng = BenchRNG(UInt64(m * 31 + n * 7 + k))
            a = rng.tensor([m, k]); b = rng.tensor([n, k]); c = Tensor(zeros: [m, n])
        }
        var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
        func run(openBLASThreads: Bool = true) {
            if openBLASThreads {
                BLAS.referenceGemm(transB: true, m: m, n: n, k: k, a: a.data, lda: k, b: b.data, ldb: k, c: c.data, ldc: n)
            } else {
                BLAS.gemm(transB: true, m: m, n: n, k: k, a: a.data, lda: k, b: b.data, ldb: k, beta: 0, c: c.data, ldc: n)
            }
        }
    }

    /// The ceiling: the better of two timed 2048³ sgemms, in GFLOP/s (the suites call it next to each
    /// figure; the better of two, because on a shared machine a single run is easily descheduled).
    static let square = Problem(m: 2048, n: 2048, k: 2048)
    static func ceiling() -> Double {
        var best = 0.0
        for _ in 0..<2 {
            let s = now()
            square.run()
            best = max(best, square.flops / (now() - s) / 1e9)
        }
        // OpenBLAS's threads busy-wait for ~2^28 cycles after a call before they sleep; let them, so they
        // do not take cycles from the figure measured next.
        usleep(300_000)
        return best
    }

    static func run(_ o: BenchOptions, into report: Report) throws {
        report.section("gemm: OpenBLAS sgemm, C = A·Bᵀ, GFLOP/s")
        var shapes: [(Int, Int, Int, String, String)] = [(2048, 2048, 2048, "square", "square 2048"),
                                                         (1024, 1024, 1024, "square", "square 1024")]
        for shape in o.shapes {
            let c = shape.language, n = shape.batch * shape.textTokens, d = c.hiddenSize, f = c.intermediateSize
            let m = shape.vision.numPatches, nc = shape.batch * (shape.textTokens + m)
            let s = shape.name
            shapes += [(n, d, d, s, "q/k/v/o N=\(n)"), (n, f, d, s, "gate/up N=\(n)"),
                       (n, d, f, s, "down N=\(n)"), (nc, f, d, s, "concat gate/up N=\(nc)"),
                       (shape.batch * shape.labelTokens, c.vocabSize, d, s, "lm_head label rows"),
                       (shape.textTokens, m, d, s, "memory x·Kᵀ per sample"),
                       (m, 128, shape.vision.hiddenSize, s, "fc1 per candidate"),
                       (shape.textTokens, shape.textTokens, c.headDim, s, "attention scores")]
        }
        for (m, n, k, config, label) in shapes {
            let p = Problem(m: m, n: n, k: k)
            let reps = max(1, Int(2e8 / p.flops))  // small shapes: time a batch of calls
            for (mode, openBLASThreads) in [("openblas", true), ("model", false)] {
                let s = timeRuns(runs: o.runs, warmup: o.warmup) { for _ in 0..<reps { p.run(openBLASThreads: openBLASThreads) } }
                report.add("gemm", config: config, mode: mode, name: "\(m)x\(n)x\(k) \(label)", unit: "GFLOP/s",
                           s.rate(p.flops * Double(reps) / 1e9))
            }
        }
    }
}
