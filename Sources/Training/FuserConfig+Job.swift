import Cluster
import Model

extension FuserConfig {
    /// The job's `model` settings resolved against the two backbones. A value that does not fit them (a
    /// candidate layer the ViT lacks, a pooled token count that does not tile its patch grid) is a
    /// ``ConfigError`` naming the key.
    public init(job m: JobConfig.Model, vision: CLIPVisionConfig, language: LlamaConfig) throws {
        let lv = vision.numHiddenLayers
        var problems: [ConfigError.Problem] = []
        func bad(_ key: String, _ message: String) { problems.append(.init(.invalidValue, key: key, message)) }
        if m.fusion == .dehvf, let layers = m.visionLayers {
            for j in layers where j < 0 || j > lv {
                bad("model.vision_layers", "has \(j), but the vision model has hidden states 0...\(lv) (\(lv) layers)")
            }
            if Set(layers).count != layers.count { bad("model.vision_layers", "\(layers) lists a layer twice") }
            if layers.isEmpty { bad("model.vision_layers", "is empty; leave it out for the default") }
        }
        let np = vision.numPatches
        let pooled = m.visualTokens == 0 ? np : m.visualTokens
        let side = Int(Double(np).squareRoot().rounded()), pooledSide = Int(Double(pooled).squareRoot().rounded())
        if !(side * side == np && pooledSide * pooledSide == pooled && pooled <= np && side % pooledSide == 0) {
            bad("model.visual_tokens", "\(m.visualTokens): pooling needs a square count whose side divides the patch grid side \(side) (\(np) patches), e.g. \(np / 4 > 0 ? "\(np / 4)" : "0") or 0 for every patch")
        }
        if m.projectorRank <= 0 { bad("model.projector_rank", "must be positive, found \(m.projectorRank)") }
        if !(m.dropout >= 0 && m.dropout < 1) { bad("model.dropout", "must satisfy 0 <= dropout < 1, found \(m.dropout)") }
        guard problems.isEmpty else {
            throw ConfigError(source: "the job's model against its backbones", problems: problems)
        }
        self.init(fusion: m.fusion, visionLayers: m.visionLayers, projectorRank: m.projectorRank,
                  visualTokens: m.visualTokens, featureScale: Float(m.featureScale),
                  injectionScale: Float(m.injectionScale), dropout: Float(m.dropout), vision: vision, language: language)
    }
}
