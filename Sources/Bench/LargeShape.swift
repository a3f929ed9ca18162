import Model

/// The paper's scale, for projections: LLaMA-7B (d 4096, 32 layers) with CLIP ViT-L/14 at 224 px
/// (Dv 1024, 24 layers, 256 patch tokens), the fuser at its default settings.
enum LargeShape {
    static let name = "llama7b+vitl14"
    static let vision = CLIPVisionConfig(hiddenSize: 1024, intermediateSize: 4096, numHiddenLayers: 24,
                                         numAttentionHeads: 16, imageSize: 224, patchSize: 14)
    static let language = LlamaConfig(hiddenSize: 4096, intermediateSize: 11008, numHiddenLayers: 32,
                                      numAttentionHeads: 32, vocabSize: 32000)
    static func fuser(_ mode: FusionMode = .dehvf) throws -> FuserConfig {
        FuserConfig(fusion: mode, visionLayers: nil, projectorRank: 128, visualTokens: 0, featureScale: 0.01,
                        injectionScale: 0.1, dropout: 0.1, vision: vision, language: language)
    }
}

extension FuserConfig {
    /// Trainable parameters with deterministic non-zero values (initialisation, router perturbed).
    func benchParameters() -> TensorSet {
        let p = initialParameters(seed: 4)
        var rng = BenchRNG(9)
        if let w = p["router.weight"] { for i in 0..<w.count { w.data[i] = Float(Int(rng.next() % 2001) - 1000) * 1e-5 } }
        return p
    }
    var parameterCount: Int { parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) } }
}
