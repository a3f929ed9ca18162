extension CLIPVisionModel {
    /// DEHVF's candidate features (DESIGN.md §4): for each index j in `layers` (into the hidden states,
    /// 0...Lv), F_j = post_layernorm(hidden_states[j]) without the CLS token, [B, M, Dv]. With
    /// `visualTokens` M' > 0 (M' < Np), each is then average-pooled over non-overlapping windows of the
    /// patch grid (sqrt(M') must divide sqrt(Np)), row-major like avg_pool2d then flatten.
    public func candidateFeatures(pixelValues: Tensor, layers: [Int], visualTokens: Int = 0) throws -> [Tensor] {
        let L = config.numHiddenLayers
        for j in layers where j < 0 || j > L {
            throw ModelError(.badConfig, "vision layer \(j) is out of range: hidden states are 0...\(L)")
        }
        let g = config.imageSize / config.patchSize, Np = g * g
        var gp = g
        if visualTokens > 0 && visualTokens != Np {
            gp = Int(Double(visualTokens).squareRoot().rounded())
            guard gp * gp == visualTokens, gp > 0, g % gp == 0 else {
                throw ModelError(.badConfig,
                    "visual_tokens \(visualTokens) must be a square whose side divides the \(g)x\(g) patch grid (\(Np) patches)")
            }
        }
        let states = try forward(pixelValues: pixelValues)
        let B = pixelValues.shape[0], D = config.hiddenSize, S = Np + 1
        return layers.map { j in
            let h = states[j]
            let noCLS = Tensor(zeros: [B, Np, D])
            for b in 0..<B { (noCLS.data + b * Np * D).update(from: h.data + (b * S + 1) * D, count: Np * D) }
            let f = postLayerNorm(noCLS)
            return gp == g ? f : CLIPVisionModel.averagePool(f, grid: g, to: gp)
        }
    }

    /// Mean over non-overlapping (g/gp)² windows of a [B, g*g, D] token grid: [B, gp*gp, D].
    public static func averagePool(_ f: Tensor, grid g: Int, to gp: Int) -> Tensor {
        let B = f.shape[0], D = f.shape[2], w = g / gp
        let out = Tensor(zeros: [B, gp * gp, D])
        let inv = 1 / Float(w * w)
        for b in 0..<B {
            for oy in 0..<gp {
                for ox in 0..<gp {
                    let dst = out.data + (b * gp * gp + oy * gp + ox) * D
                    for dy in 0..<w {
                        for dx in 0..<w {
                            Vec.add(f.data + (b * g * g + (oy * w + dy) * g + ox * w + dx) * D, dst, D)
                        }
                    }
                    Vec.scale(dst, inv, D)
                }
            }
        }
        return out
    }
}
