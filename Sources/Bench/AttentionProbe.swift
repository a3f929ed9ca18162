import Model

/// Part of the step suite: the LLM's attention on its own (forward, then backward with probabilities
/// recomputed, as training runs it), for the text length and for concat's text + visual length, in
/// GFLOP/s of the GEMMs a full (unmasked) attention would do, so causal block skipping shows as a gain.
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
            let scratch = Tensor(zeros: [BLAS.threads, s.scratchPerLane(backward: true)])
            // Forward (QKᵀ, PV) + backward (recomputed QKᵀ, dP, dQ, dK, dV): 2+5 GEMMs of T·T·hd per head.
            let flops = 14 * Double(shape.batch * c.numAttentionHeads * t * t * c.headDim)
            let timed = timeRuns(runs: o.runs, warmup: o.warmup) {
                Attention.forward(s, q: q.data, k: k.data, v: v.data, keyMask: nil, scratch: scratch.buffer, out: out.data)
                Attention.backward(s, q: q.data, k: k.data, v: v.data, keyMask: nil, probs: nil, dOut: dOut.data,
                                   dq: dq.data, dk: dk.data, dv: dv.data, scratch: scratch.buffer)
            }
            let ceiling = Samples((0..<o.runs).map { _ in GemmBench.ceiling() })
            report.add("step", config: shape.name, mode: "attention", name: "\(label) fwd+bwd, full-attention GFLOP/s", unit: "GFLOP/s", timed.rate(flops / 1e9))
            report.add("step", config: shape.name, mode: "attention", name: "\(label) / sgemm ceiling", unit: "ratio",
                       Samples([timed.rate(flops / 1e9).median / ceiling.median]))
            report.add("step", config: shape.name, mode: "attention", name: "\(label) per layer", unit: "ms", timed.map { $0 * 1e3 })
        }
    }
}
