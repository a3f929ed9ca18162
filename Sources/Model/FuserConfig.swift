/// Which of the paper's three ways of giving the LLM the image (DESIGN.md §4).
public enum FusionMode: String, Codable, Sendable, CaseIterable {
    /// Per-layer routed mix of shallow and deep ViT layers, injected as FFN key/value memory.
    case dehvf
    /// MemVP: the last candidate layer only, no router, injected as FFN key/value memory.
    case memvp
    /// LLaVA: projected features prepended to the token sequence.
    case concat
}

/// The trainable part's shape and hyper-parameters, resolved against the two backbones.
public struct FuserConfig: Sendable, Equatable, Codable {
    public var fusion: FusionMode
    /// Indices into the vision hidden_states (0 = embeddings, j = output of layer j).
    public var visionLayers: [Int]
    public var projectorRank: Int
    /// M: visual tokens after pooling (= Np when no pooling).
    public var visualTokens: Int
    public var featureScale: Float
    public var injectionScale: Float
    public var dropout: Float

    /// Shapes from the backbones.
    public var llmLayers: Int
    public var llmWidth: Int
    public var visionWidth: Int
    /// Np: patch tokens per image before pooling.
    public var patchTokens: Int

    public var candidates: Int { visionLayers.count }

    /// The default candidate layers of DESIGN.md §4: Lv/4, Lv/2, 3Lv/4, Lv-1, duplicates dropped.
    public static func defaultVisionLayers(visionDepth lv: Int) -> [Int] {
        var out: [Int] = []
        for j in [lv / 4, lv / 2, 3 * lv / 4, lv - 1] where !out.contains(j) { out.append(j) }
        return out
    }

    /// Resolves the job's model settings against the backbones, or throws a config error that says
    /// what to change.
    public init(fusion: FusionMode, visionLayers: [Int]?, projectorRank: Int, visualTokens: Int,
                featureScale: Float, injectionScale: Float, dropout: Float,
                vision: CLIPVisionConfig, language: LlamaConfig) throws {
        let lv = vision.numHiddenLayers
        var layers = visionLayers ?? Self.defaultVisionLayers(visionDepth: lv)
        if fusion != .dehvf { layers = [lv - 1] }
        guard !layers.isEmpty else { throw ModelError(.badConfig, "model.vision_layers is empty") }
        for j in layers where j < 0 || j > lv {
            throw ModelError(.badConfig,
                "model.vision_layers has \(j), but the vision model has hidden states 0...\(lv) (\(lv) layers)")
        }
        guard Set(layers).count == layers.count else {
            throw ModelError(.badConfig, "model.vision_layers \(layers) lists a layer twice")
        }
        let np = vision.numPatches
        let m = visualTokens == 0 ? np : visualTokens
        let side = Int(Double(np).squareRoot().rounded()), mSide = Int(Double(m).squareRoot().rounded())
        guard side * side == np, mSide * mSide == m, m <= np, side % mSide == 0 else {
            throw ModelError(.badConfig,
                "model.visual_tokens = \(visualTokens): pooling needs a square count whose side divides the patch grid side \(side) (\(np) patches), e.g. \(np / 4 > 0 ? "\(np / 4)" : "0") or 0 for every patch")
        }
        guard projectorRank > 0 else { throw ModelError(.badConfig, "model.projector_rank must be positive") }
        guard dropout >= 0, dropout < 1 else { throw ModelError(.badConfig, "model.dropout must be in [0, 1)") }
        self.fusion = fusion
        self.visionLayers = layers
        self.projectorRank = projectorRank
        self.visualTokens = m
        self.featureScale = featureScale
        self.injectionScale = injectionScale
        self.dropout = dropout
        self.llmLayers = language.numHiddenLayers
        self.llmWidth = language.hiddenSize
        self.visionWidth = vision.hiddenSize
        self.patchTokens = np
    }

    /// Trainable tensors and their shapes, in the canonical order used on disk and on the wire.
    public var parameterShapes: [(name: String, shape: [Int])] {
        let l = llmLayers, s = candidates, d = llmWidth, r = projectorRank, m = visualTokens
        var out: [(String, [Int])] = []
        if fusion == .dehvf { out += [("router.weight", [l, s, d]), ("router.bias", [l, s])] }
        out += [("projector.fc1.weight", [r, visionWidth]), ("projector.fc1.bias", [r]),
                ("projector.fc2.weight", [d, r]), ("projector.fc2.bias", [d])]
        if fusion != .concat { out += [("prompt.key_pos", [m, d]), ("prompt.value_pos", [m, d])] }
        return out
    }
}
