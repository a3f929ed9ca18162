import Dispatch
import Model

/// Part of the step suite: the LLM's attention on its own (forward, then backward with probabilities
/// recomputed, as training runs it), for the text length and for concat's text + visual length. Timed
/// as the model runs it (one (batch, head) at a time, threads inside each small sgemm), and split by
/// batch over the threads with one-thread sgemm inside (the change proposed for Model/Attention.swift).
enum AttentionProbe {
    static func run(_ o: BenchOptions, shape: BenchShape, into report: Report) {
        let c = shape.language
        for (label, t) in [("text T", shape.textTokens), ("concat T+M", shape.textTokens + shape.vision.numPatches)] {
            let s = AttentionShape(batch: shape.batch, length: t, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
                                   headDim: c.headDim, causal: true)
            var rng = BenchRNG(31)
            let width = c.numAttentionHeads * c.headDim, n = shape.batch * t * width
            let q = rng.tensor([n]), k = rng.tensor([n]), v = rng.tensor([n]), dOut = rng.tensor([n])
            let out = Tensor(zeros: [n]), dq = Tensor(zeros: [n]), dk = Tensor(zeros: [n]), dv = Tensor(zeros: [n])
            let threads = max(1, o.threads)
            let scratch = (0..<threads).map { _ in Tensor(zeros: [2 * t * t]) }
            let probs = (0..<threads).map { _ in Tensor(zeros: [t * t]) }
            // Forward (QKᵀ, PV) + backward (recomputed QKᵀ, dP, dQ, dK, dV): 2+5 GEMMs of T·T·hd per head.
            let flops = 14 * Double(shape.batch * c.numAttentionHeads * t * t * c.headDim)
            func pass(_ part: AttentionShape, offset: Int, slot: Int) {
                Attention.forward(part, q: q.data + offset, k: k.data + offset, v: v.data + offset, keyMask: nil,
                                  probs: probs[slot].data, saveProbs: false, out: out.data + offset)
                Attention.backward(part, q: q.data + offset, k: k.data + offset, v: v.data + offset, keyMask: nil,
                                   probs: nil, dOut: dOut.data + offset, dq: dq.data + offset, dk: dk.data + offset,
                                   dv: dv.data + offset, scratch: scratch[slot].data)
            }
            let asIs = timeRuns(runs: o.runs, warmup: o.warmup) { pass(s, offset: 0, slot: 0) }
            BLAS.setThreads(1)
            let split = timeRuns(runs: o.runs, warmup: o.warmup) {
                let per = (shape.batch + threads - 1) / threads
                DispatchQueue.concurrentPerform(iterations: threads) { i in
                    let b0 = i * per, b1 = min(shape.batch, b0 + per)
                    guard b1 > b0 else { return }
                    var part = s
                    part.batch = b1 - b0
                    pass(part, offset: b0 * t * width, slot: i)
                }
            }
            BLAS.setThreads(o.threads)
            let ceiling = Samples((0..<o.runs).map { _ in GemmBench.ceiling() })
            report.add("step", config: shape.name, mode: "attention", name: "\(label) fwd+bwd, as the model runs it", unit: "GFLOP/s", asIs.rate(flops / 1e9))
            report.add("step", config: shape.name, mode: "attention", name: "\(label) fwd+bwd, batch split over threads", unit: "GFLOP/s", split.rate(flops / 1e9))
            report.add("step", config: shape.name, mode: "attention", name: "\(label) as run / sgemm ceiling", unit: "ratio",
                       Samples([asIs.rate(flops / 1e9).median / ceiling.median]))
            report.add("step", config: shape.name, mode: "attention", name: "\(label) per layer, as run", unit: "ms", asIs.map { $0 * 1e3 })
        }
    }
}
