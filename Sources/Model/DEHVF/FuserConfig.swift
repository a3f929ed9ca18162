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

    /// The trainable part for these backbones: `visionLayers` nil takes the default candidates, memvp and
    /// concat use the last layer only, `visualTokens` 0 keeps every patch.
    ///
    /// - Precondition: the values fit the backbones. A job's settings are checked, with errors that name
    ///   their keys, before they get here (`FuserConfig(job:vision:language:)` in Training).
    public init(fusion: FusionMode, visionLayers: [Int]? = nil, projectorRank: Int = 128, visualTokens: Int = 0,
                featureScale: Float = 0.01, injectionScale: Float = 0.1, dropout: Float = 0.1,
                vision: CLIPVisionConfig, language: LlamaConfig) {
        let lv = vision.numHiddenLayers
        let layers = fusion == .dehvf ? visionLayers ?? Self.defaultVisionLayers(visionDepth: lv) : [lv - 1]
        let m = visualTokens == 0 ? vision.numPatches : visualTokens
        precondition(!layers.isEmpty && layers.allSatisfy { (0...lv).contains($0) } && Set(layers).count == layers.count,
                     "vision layers \(layers) do not fit a vision model with \(lv) layers")
        precondition(projectorRank > 0 && m > 0 && m <= vision.numPatches && dropout >= 0 && dropout < 1)
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
        self.patchTokens = vision.numPatches
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
