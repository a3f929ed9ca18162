// bench: measured speed of the numeric core against this machine's own sgemm ceiling.
//
//   swift run -c release bench [threads]      (or DEHVF_THREADS=n; default 2)
import Foundation
import Model

let threads = Int(CommandLine.arguments.dropFirst().first ?? "") ??
    Int(ProcessInfo.processInfo.environment["DEHVF_THREADS"] ?? "") ?? 2
BLAS.setThreads(threads)
print("OpenBLAS threads: \(BLAS.threads)")

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Best wall time of `runs` calls after `warmup` calls.
func best(runs: Int, warmup: Int = 2, _ body: () throws -> Void) rethrows -> Double {
    for _ in 0..<warmup { try body() }
    var t = Double.infinity
    for _ in 0..<runs {
        let s = now()
        try body()
        t = min(t, now() - s)
    }
    return t
}

func randomTensor(_ shape: [Int], scale: Float, seed: inout UInt64) -> Tensor {
    let t = Tensor(zeros: shape)
    for i in 0..<t.count {
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        t.data[i] = (Float(seed >> 40) / Float(1 << 24) * 2 - 1) * scale
    }
    return t
}

// MARK: sgemm ceiling

/// C[m,n] = A[m,k] Bᵀ (the layout of every linear layer): 2mnk FLOPs.
func sgemmRate(m: Int, n: Int, k: Int, transB: Bool = true) -> Double {
    var seed: UInt64 = 1
    let a = randomTensor([m, k], scale: 1, seed: &seed), b = randomTensor([n, k], scale: 1, seed: &seed)
    let c = Tensor(zeros: [m, n])
    let runs = m * n * k > 500_000_000 ? 5 : 20
    let t = best(runs: runs) {
        BLAS.gemm(transB: transB, m: m, n: n, k: k, a: a.data, lda: k, b: b.data, ldb: transB ? k : n,
                  beta: 0, c: c.data, ldc: n)
    }
    return 2 * Double(m) * Double(n) * Double(k) / t / 1e9
}

print("\nsgemm, row-major C = A Bᵀ, best of several runs after warm-up:")
var peak = 0.0
for (m, n, k, label) in [(1024, 1024, 1024, "square 1024"), (2048, 2048, 2048, "square 2048"),
                         (768, 512, 512, "q/k/v/o proj (N=768, d=512)"),
                         (768, 1376, 512, "gate/up (N=768, F=1376)"),
                         (768, 512, 1376, "down (N=768, F=1376)"),
                         (768, 4096, 512, "lm_head (N=768, V=4096)"),
                         (96, 96, 64, "attention scores (T=96, hd=64)")] {
    let r = sgemmRate(m: m, n: n, k: k)
    if m == n && n == k && m >= 1024 { peak = max(peak, r) }
    print(String(format: "  %5d x %5d x %5d  %7.1f GFLOP/s  %@", m, n, k, r, label))
}
print(String(format: "  peak (best square): %.1f GFLOP/s", peak))

// MARK: LLaMA forward

final class RandomWeights: WeightSource {
    var tensors: [String: Tensor] = [:]
    func take(_ name: String, shape: [Int]) throws -> Tensor {
        guard let t = tensors[name], t.shape == shape else { throw ModelError(.missingTensor, name) }
        return t
    }
    func contains(_ name: String) -> Bool { tensors[name] != nil }
    var names: [String] { Array(tensors.keys) }
    func finish(ignoringPrefixes: [String]) throws {}
}

let cfg = LlamaConfig(hiddenSize: 512, intermediateSize: 1376, numHiddenLayers: 8, numAttentionHeads: 8,
                      vocabSize: 4096)
let B = 8, T = 96, N = B * T
let weights = RandomWeights()
var seed: UInt64 = 7
let dm = cfg.hiddenSize, F = cfg.intermediateSize, V = cfg.vocabSize
let qd = cfg.numAttentionHeads * cfg.headDim, kd = cfg.numKeyValueHeads * cfg.headDim
weights.tensors["model.embed_tokens.weight"] = randomTensor([V, dm], scale: 1, seed: &seed)
weights.tensors["lm_head.weight"] = randomTensor([V, dm], scale: 0.05, seed: &seed)
weights.tensors["model.norm.weight"] = Tensor(shape: [dm], values: .init(repeating: 1, count: dm))
for l in 0..<cfg.numHiddenLayers {
    let p = "model.layers.\(l)."
    weights.tensors[p + "input_layernorm.weight"] = Tensor(shape: [dm], values: .init(repeating: 1, count: dm))
    weights.tensors[p + "post_attention_layernorm.weight"] = Tensor(shape: [dm], values: .init(repeating: 1, count: dm))
    for (n, s) in [("self_attn.q_proj", [qd, dm]), ("self_attn.k_proj", [kd, dm]), ("self_attn.v_proj", [kd, dm]),
                   ("self_attn.o_proj", [dm, qd]), ("mlp.gate_proj", [F, dm]), ("mlp.up_proj", [F, dm]),
                   ("mlp.down_proj", [dm, F])] {
        weights.tensors[p + n + ".weight"] = randomTensor(s, scale: 1 / Float(s[1]).squareRoot(), seed: &seed)
    }
}
let model = try LlamaModel(config: cfg, weights: weights)
let emb = randomTensor([B, T, dm], scale: 1, seed: &seed)

// FLOPs of one forward (multiply-add = 2):
//   per layer: 2N(d·qd + 2·d·kd + qd·d)          q, k, v, o projections
//            + 2N·3·d·F                            gate, up, down
//            + 4·B·H·T²·hd                         scores Q Kᵀ and P V (full T×T, causal half not skipped)
//   plus the lm_head on every row: 2N·d·V.  Elementwise work (norms, rotary, softmax, SiLU) is not counted.
let perLayer = 2.0 * Double(N) * Double(dm * qd + 2 * dm * kd + qd * dm + 3 * dm * F)
    + 4.0 * Double(B * cfg.numAttentionHeads * T * T * cfg.headDim)
let headFlops = 2.0 * Double(N * dm * V)
let flops = Double(cfg.numHiddenLayers) * perLayer + headFlops

print("\nLLaMA forward: d=512, 8 layers, 8 heads, FFN 1376, vocab 4096, batch \(B) x \(T) tokens")
// The machine is shared, so its speed drifts: each round measures the sgemm ceiling (2048³) right next to
// the forward, and the ratio is taken within a round.
let inferWS = model.makeWorkspace(batch: B, length: T, training: false)
var ratios: [Double] = [], fwdTimes: [Double] = [], peaks: [Double] = []
for _ in 0..<5 {
    let p = sgemmRate(m: 2048, n: 2048, k: 2048)
    let t = try best(runs: 3, warmup: 1) {
        let out = try model.forward(embeddings: emb, workspace: inferWS)
        _ = model.logits(out.final)
    }
    peaks.append(p)
    fwdTimes.append(t)
    ratios.append(flops / t / 1e9 / p)
}
let tInfer = fwdTimes.min()!
print(String(format: "  inference forward + logits: best %.1f ms, %.1f GFLOP (formula above), %.1f GFLOP/s", tInfer * 1e3,
             flops / 1e9, flops / tInfer / 1e9))
print("  per round (sgemm 2048 peak / forward GFLOP/s / ratio):")
for i in 0..<ratios.count {
    print(String(format: "    %6.1f  %6.1f  %4.0f%%", peaks[i], flops / fwdTimes[i] / 1e9, 100 * ratios[i]))
}
print(String(format: "  forward / sgemm peak: median %.0f%%, best-forward vs best-peak %.0f%%",
             100 * ratios.sorted()[ratios.count / 2], 100 * flops / tInfer / 1e9 / max(peak, peaks.max()!)))

let trainWS = model.makeWorkspace(batch: B, length: T, training: true)
let tTrain = try best(runs: 5) {
    _ = try model.forward(embeddings: emb, workspace: trainWS)
}
print(String(format: "  training forward (keeps activations, no logits): %.1f ms, %.1f GFLOP/s",
             tTrain * 1e3, (flops - headFlops) / tTrain / 1e9))
let dFinal = randomTensor([B, T, dm], scale: 1, seed: &seed)
let tBack = try best(runs: 5) {
    _ = try model.backward(dFinal: dFinal, workspace: trainWS)
}
// Backward FLOPs: activation gradients only, one GEMM per forward GEMM for the linears (dx = dy W)
// and four T×T×hd GEMMs per head for attention, so about (layers·perLayer + 2·B·H·T²·hd·layers).
let backFlops = Double(cfg.numHiddenLayers) * (perLayer + 4.0 * Double(B * cfg.numAttentionHeads * T * T * cfg.headDim))
print(String(format: "  backward (activation gradients only): %.1f ms, %.1f GFLOP/s",
             tBack * 1e3, backFlops / tBack / 1e9))
