import Foundation
import Model
import TestSupport

// Straightforward scalar-loop references in double, independent of the kernels under test.

func d(_ t: Tensor) -> [Double] { t.array.map(Double.init) }

/// y[r, o] = Σ_i x[r, i] W[o, i] + b[o]
func naiveLinear(_ x: [Double], rows: Int, _ w: [Double], out: Int, _ b: [Double]? = nil) -> [Double] {
    let inF = x.count / rows
    var y = [Double](repeating: 0, count: rows * out)
    for r in 0..<rows {
        for o in 0..<out {
            var s = b?[o] ?? 0
            for i in 0..<inF { s += x[r * inF + i] * w[o * inF + i] }
            y[r * out + o] = s
        }
    }
    return y
}

func naiveLayerNorm(_ x: [Double], dim: Int, _ g: [Double], _ b: [Double], eps: Double) -> [Double] {
    var y = x
    for r in 0..<(x.count / dim) {
        let row = Array(x[(r * dim)..<(r * dim + dim)])
        let mu = row.reduce(0, +) / Double(dim)
        let varc = row.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(dim)
        for i in 0..<dim { y[r * dim + i] = (row[i] - mu) / (varc + eps).squareRoot() * g[i] + b[i] }
    }
    return y
}

func naiveRMSNorm(_ x: [Double], dim: Int, _ w: [Double], eps: Double) -> [Double] {
    var y = x
    for r in 0..<(x.count / dim) {
        var ss = 0.0
        for i in 0..<dim { ss += x[r * dim + i] * x[r * dim + i] }
        let rs = 1 / (ss / Double(dim) + eps).squareRoot()
        for i in 0..<dim { y[r * dim + i] = x[r * dim + i] * rs * w[i] }
    }
    return y
}

/// Attention over [B, T, heads * hd] queries and [B, T, kvHeads * hd] keys/values.
func naiveAttentionD(_ q: [Double], _ k: [Double], _ v: [Double], B: Int, T: Int, heads: Int, kvHeads: Int, hd: Int,
                     causal: Bool, mask: [Float]?) -> [Double] {
    let qs = heads * hd, ks = kvHeads * hd
    var out = [Double](repeating: 0, count: B * T * qs)
    for b in 0..<B {
        for h in 0..<heads {
            let kh = h / (heads / kvHeads)
            for i in 0..<T {
                let allowed = (0..<T).filter { (!causal || $0 <= i) && (mask == nil || mask![b * T + $0] != 0) }
                if allowed.isEmpty { continue }
                var sc = allowed.map { j -> Double in
                    var s = 0.0
                    for c in 0..<hd { s += q[(b * T + i) * qs + h * hd + c] * k[(b * T + j) * ks + kh * hd + c] }
                    return s / Double(hd).squareRoot()
                }
                let m = sc.max()!
                sc = sc.map { exp($0 - m) }
                let z = sc.reduce(0, +)
                for c in 0..<hd {
                    var o = 0.0
                    for (n, j) in allowed.enumerated() { o += sc[n] / z * v[(b * T + j) * ks + kh * hd + c] }
                    out[(b * T + i) * qs + h * hd + c] = o
                }
            }
        }
    }
    return out
}

func naiveRope(_ x: inout [Double], rows: Int, heads: Int, hd: Int, positions: [Int32], theta: Double) {
    for r in 0..<rows {
        for h in 0..<heads {
            for i in 0..<(hd / 2) {
                let ang = Double(positions[r]) / pow(theta, Double(2 * i) / Double(hd))
                let a = x[(r * heads + h) * hd + i], b = x[(r * heads + h) * hd + i + hd / 2]
                x[(r * heads + h) * hd + i] = a * cos(ang) - b * sin(ang)
                x[(r * heads + h) * hd + i + hd / 2] = b * cos(ang) + a * sin(ang)
            }
        }
    }
}

/// LLaMA forward (no injection): transformers' hidden_states and the logits.
func naiveLlama(_ w: [String: Tensor], _ c: LlamaConfig, emb: [Double], B: Int, T: Int, positions: [Int32],
                mask: [Float]?) -> (states: [[Double]], logits: [Double]) {
    let N = B * T, dm = c.hiddenSize, F = c.intermediateSize, H = c.numAttentionHeads, Hkv = c.numKeyValueHeads, hd = c.headDim
    let eps = Double(c.rmsNormEps)
    var h = emb
    var states: [[Double]] = []
    for l in 0..<c.numHiddenLayers {
        states.append(h)
        let p = "model.layers.\(l)."
        let xn = naiveRMSNorm(h, dim: dm, d(w[p + "input_layernorm.weight"]!), eps: eps)
        var q = naiveLinear(xn, rows: N, d(w[p + "self_attn.q_proj.weight"]!), out: H * hd)
        var k = naiveLinear(xn, rows: N, d(w[p + "self_attn.k_proj.weight"]!), out: Hkv * hd)
        let v = naiveLinear(xn, rows: N, d(w[p + "self_attn.v_proj.weight"]!), out: Hkv * hd)
        naiveRope(&q, rows: N, heads: H, hd: hd, positions: positions, theta: Double(c.ropeTheta))
        naiveRope(&k, rows: N, heads: Hkv, hd: hd, positions: positions, theta: Double(c.ropeTheta))
        let a = naiveAttentionD(q, k, v, B: B, T: T, heads: H, kvHeads: Hkv, hd: hd, causal: true, mask: mask)
        let o = naiveLinear(a, rows: N, d(w[p + "self_attn.o_proj.weight"]!), out: dm)
        let hp = zip(h, o).map { $0 + $1 }
        let x = naiveRMSNorm(hp, dim: dm, d(w[p + "post_attention_layernorm.weight"]!), eps: eps)
        let g = naiveLinear(x, rows: N, d(w[p + "mlp.gate_proj.weight"]!), out: F)
        let u = naiveLinear(x, rows: N, d(w[p + "mlp.up_proj.weight"]!), out: F)
        let act = zip(g, u).map { $0 / (1 + exp(-$0)) * $1 }
        let down = naiveLinear(act, rows: N, d(w[p + "mlp.down_proj.weight"]!), out: dm)
        h = zip(hp, down).map { $0 + $1 }
    }
    let final = naiveRMSNorm(h, dim: dm, d(w["model.norm.weight"]!), eps: eps)
    states.append(final)
    let head = w["lm_head.weight"] ?? w["model.embed_tokens.weight"]!
    return (states, naiveLinear(final, rows: N, d(head), out: c.vocabSize))
}

/// CLIP vision forward: every hidden state.
func naiveCLIP(_ w: [String: Tensor], prefix p: String, _ c: CLIPVisionConfig, pixels: Tensor) -> [[Double]] {
    let B = pixels.shape[0], D = c.hiddenSize, I = c.intermediateSize, ps = c.patchSize, img = c.imageSize
    let g = img / ps, Np = g * g, S = Np + 1, H = c.numAttentionHeads, hd = D / H, C = c.numChannels
    let eps = Double(c.layerNormEps)
    let pw = d(w[p + "embeddings.patch_embedding.weight"]!), pos = d(w[p + "embeddings.position_embedding.weight"]!)
    let cls = d(w[p + "embeddings.class_embedding"]!), px = d(pixels)
    var h = [Double](repeating: 0, count: B * S * D)
    for b in 0..<B {
        for o in 0..<D { h[(b * S) * D + o] = cls[o] + pos[o] }
        for gy in 0..<g {
            for gx in 0..<g {
                let t = 1 + gy * g + gx
                for o in 0..<D {
                    var s = 0.0
                    for ch in 0..<C { for ky in 0..<ps { for kx in 0..<ps {
                        s += pw[((o * C + ch) * ps + ky) * ps + kx] * px[((b * C + ch) * img + gy * ps + ky) * img + gx * ps + kx]
                    } } }
                    h[(b * S + t) * D + o] = s + pos[t * D + o]
                }
            }
        }
    }
    h = naiveLayerNorm(h, dim: D, d(w[p + "pre_layrnorm.weight"]!), d(w[p + "pre_layrnorm.bias"]!), eps: eps)
    var states = [h]
    let N = B * S
    for l in 0..<c.numHiddenLayers {
        let q = "\(p)encoder.layers.\(l)."
        func t(_ n: String) -> [Double] { d(w[q + n]!) }
        let xn = naiveLayerNorm(h, dim: D, t("layer_norm1.weight"), t("layer_norm1.bias"), eps: eps)
        let qq = naiveLinear(xn, rows: N, t("self_attn.q_proj.weight"), out: D, t("self_attn.q_proj.bias"))
        let kk = naiveLinear(xn, rows: N, t("self_attn.k_proj.weight"), out: D, t("self_attn.k_proj.bias"))
        let vv = naiveLinear(xn, rows: N, t("self_attn.v_proj.weight"), out: D, t("self_attn.v_proj.bias"))
        let a = naiveAttentionD(qq, kk, vv, B: B, T: S, heads: H, kvHeads: H, hd: hd, causal: false, mask: nil)
        let o = naiveLinear(a, rows: N, t("self_attn.out_proj.weight"), out: D, t("self_attn.out_proj.bias"))
        h = zip(h, o).map { $0 + $1 }
        let x2 = naiveLayerNorm(h, dim: D, t("layer_norm2.weight"), t("layer_norm2.bias"), eps: eps)
        var m = naiveLinear(x2, rows: N, t("mlp.fc1.weight"), out: I, t("mlp.fc1.bias"))
        m = m.map { c.hiddenAct == "gelu" ? 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) : $0 / (1 + exp(-1.702 * $0)) }
        let f = naiveLinear(m, rows: N, t("mlp.fc2.weight"), out: D, t("mlp.fc2.bias"))
        h = zip(h, f).map { $0 + $1 }
        states.append(h)
    }
    return states
}

func maxAbsDiffD(_ a: [Float], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "\(a.count) vs \(b.count)")
    var m = 0.0
    for i in 0..<a.count { m = max(m, abs(Double(a[i]) - b[i])) }
    return m
}
