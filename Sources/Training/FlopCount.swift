import Model

/// Algorithmic FLOPs (a multiply-add counts 2) of the GEMM-shaped work; elementwise work (norms, rotary,
/// softmax, SiLU, the router's mean and softmax, AdamW) is not counted, nor is recomputation. Attention
/// counts the full T'×T' products, as PyTorch eager computes them; the model skips the causal blocks above
/// the diagonal (it does 75% of the count at T' = 128, 58% at T' = 384), so for attention these are
/// FLOPs of the algorithm, not of the machine.
///
/// With B samples, T text tokens, M visual tokens, L LLM layers of width d (q width qd, k/v width kd,
/// H heads of hd, FFN F, vocab V), R label rows, a ViT of Lv layers, width Dv, FFN Fv, Np patches,
/// S candidate layers and projector rank r; T' = T (+ M for concat), N = B·T':
///
///   LLM forward      L·[2N(d·qd + 2d·kd + qd·d + 3d·F) + 4·B·H·T'²·hd] + 2·R·d·V       (lm_head on label rows)
///   LLM backward     L·[2N(d·qd + 2d·kd + qd·d + 3d·F) + 8·B·H·T'²·hd] + 2·R·d·V       (activation grads only)
///   fuser dehvf/memvp  forward  B·[2·S·M·Dv·r + L·(2·M·r·d + 4·T·M·d)]
///                      backward B·[2·S·M·Dv·r + L·(4·M·r·d + 8·T·M·d)]
///                      (fc1 per candidate once, fc2 per layer, x·Kᵀ and s·V per layer; backward:
///                       dW1, dW2 + dHidden, and dS, dV, dX, dK of the memory)
///   fuser concat       forward  B·[2·M·Dv·r + 2·M·r·d],  backward B·[2·M·Dv·r + 4·M·r·d]
///   training step    = LLM forward + LLM backward + fuser forward + fuser backward
///   ViT per image    = 2·Np·3p²·Dv + Lv·[2·(Np+1)·(4·Dv² + 2·Dv·Fv) + 4·(Np+1)²·Dv]   (forward only, cached)
public struct FlopCount: Sendable {
    public let language: LlamaConfig
    public let vision: CLIPVisionConfig
    public let fuser: FuserConfig
    /// Samples in the micro-batch, text tokens per sample, label tokens per sample.
    public let batch: Int, textTokens: Int, labelTokens: Int

    public init(language: LlamaConfig, vision: CLIPVisionConfig, fuser: FuserConfig, batch: Int, textTokens: Int,
                labelTokens: Int) {
        self.language = language
        self.vision = vision
        self.fuser = fuser
        self.batch = batch
        self.textTokens = textTokens
        self.labelTokens = labelTokens
    }

    private var mode: FusionMode { fuser.fusion }
    private var c: LlamaConfig { language }
    private var b: Double { Double(batch) }
    private var m: Double { Double(fuser.visualTokens) }
    private var t: Double { Double(textTokens) }
    private var tPrime: Double { t + (mode == .concat ? m : 0) }

    private func llmLinear() -> Double {
        let d = Double(c.hiddenSize), qd = Double(c.numAttentionHeads * c.headDim)
        let kd = Double(c.numKeyValueHeads * c.headDim), f = Double(c.intermediateSize)
        return 2 * b * tPrime * (d * qd + 2 * d * kd + qd * d + 3 * d * f)
    }
    private var attention: Double { b * Double(c.numAttentionHeads) * tPrime * tPrime * Double(c.headDim) }
    private func head(rows: Double) -> Double { 2 * rows * Double(c.hiddenSize) * Double(c.vocabSize) }

    private var fuserForward: Double {
        let dv = Double(fuser.visionWidth), r = Double(fuser.projectorRank), d = Double(c.hiddenSize)
        let s = Double(fuser.candidates), l = Double(c.numHiddenLayers)
        if mode == .concat { return b * (2 * m * dv * r + 2 * m * r * d) }
        return b * (2 * s * m * dv * r + l * (2 * m * r * d + 4 * t * m * d))
    }
    private var fuserBackward: Double {
        let dv = Double(fuser.visionWidth), r = Double(fuser.projectorRank), d = Double(c.hiddenSize)
        let s = Double(fuser.candidates), l = Double(c.numHiddenLayers)
        if mode == .concat { return b * (2 * m * dv * r + 4 * m * r * d) }
        return b * (2 * s * m * dv * r + l * (4 * m * r * d + 8 * t * m * d))
    }

    /// One training step (forward and backward of the micro-batch) on cached features.
    public var step: Double { step(labelRows: batch * labelTokens) }

    /// One training step whose samples have `labelRows` label tokens in all (the lm_head runs on exactly
    /// those rows), on cached features.
    public func step(labelRows: Int) -> Double {
        let l = Double(c.numHiddenLayers)
        return l * (2 * llmLinear() + 12 * attention) + 2 * head(rows: Double(labelRows)) + fuserForward + fuserBackward
    }

    /// The training FLOPs of one micro-batch as the job computes it, on cached features: its rows at the
    /// length of the longest, `labelRows` label tokens in all.
    public static func microBatch(language: LlamaConfig, vision: CLIPVisionConfig, fuser: FuserConfig, rows: Int,
                                  longest: Int, labelRows: Int) -> Double {
        FlopCount(language: language, vision: vision, fuser: fuser, batch: rows, textTokens: longest, labelTokens: 0)
            .step(labelRows: labelRows)
    }

    /// Forward-only scoring: logits at one row per sample.
    public var infer: Double {
        Double(c.numHiddenLayers) * (llmLinear() + 4 * attention) + head(rows: b) + fuserForward
    }

    /// The frozen ViT's forward for one image.
    public var visionPerImage: Double {
        let v = vision
        let np = Double(v.numPatches), n = np + 1, dv = Double(v.hiddenSize), fv = Double(v.intermediateSize)
        let p = Double(v.patchSize)
        return 2 * np * 3 * p * p * dv
            + Double(v.numHiddenLayers) * (2 * n * (4 * dv * dv + 2 * dv * fv) + 4 * n * n * dv)
    }
}
