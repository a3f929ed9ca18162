import Foundation

/// A `LlamaForCausalLM` `config.json`. Field names follow transformers' `LlamaConfig`; `head_dim` may be
/// absent (then hidden_size / num_attention_heads), `num_key_value_heads` may be absent (then =
/// num_attention_heads), `max_position_embeddings` may be absent (then 2048, transformers' default).
///
/// Rotary embeddings are read as transformers 5 reads them (`RotaryEmbeddingConfigMixin`): the rope object
/// is `rope_scaling` when it is a non-empty object, else `rope_parameters`; its type is `rope_type`, else
/// the legacy `type`, else `default`; `rope_theta` is the object's, else the top-level one, else 10000.
/// Types other than those in `RopeScaling.supportedTypes` are refused by name.
public struct LlamaConfig: Codable, Sendable, Equatable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var ropeTheta: Float
    /// The rotary scaling type and its parameters (`.none` for `default`).
    public var ropeScaling: RopeScaling
    /// The context the model was trained for. A position at or past it is an error unless `ropeScaling`
    /// allows it (only `dynamic` does); dynamic NTK scales its frequencies past it.
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var hiddenAct: String
    public var attentionBias: Bool
    public var mlpBias: Bool
    /// `eos_token_id` (the first, when config.json lists several): where a generated caption ends.
    public var eosTokenID: Int32?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", vocabSize = "vocab_size"
        case rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta"
        case tieWordEmbeddings = "tie_word_embeddings", hiddenAct = "hidden_act"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", eosTokenID = "eos_token_id"
        case ropeParameters = "rope_parameters", ropeScaling = "rope_scaling"
        case maxPositionEmbeddings = "max_position_embeddings"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case partialRotaryFactor = "partial_rotary_factor"
    }

    public init(hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int? = nil, headDim: Int? = nil, vocabSize: Int, rmsNormEps: Float = 1e-6,
                ropeTheta: Float = 10000, ropeScaling: RopeScaling = .none, maxPositionEmbeddings: Int = 2048,
                tieWordEmbeddings: Bool = false) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.headDim = headDim ?? hiddenSize / numAttentionHeads
        self.vocabSize = vocabSize
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.hiddenAct = "silu"
        self.attentionBias = false
        self.mlpBias = false
        self.eosTokenID = nil
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 4096
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 11008
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? 32
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? 32
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? hiddenSize / numAttentionHeads
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? 32000
        rmsNormEps = try c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        if let one = try? c.decodeIfPresent(Int32.self, forKey: .eosTokenID) {
            eosTokenID = one
        } else {
            eosTokenID = (try? c.decodeIfPresent([Int32].self, forKey: .eosTokenID))??.first
        }
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        guard maxPositionEmbeddings > 0 else {
            throw ModelError(.badConfig, "max_position_embeddings must be positive, got \(maxPositionEmbeddings)")
        }
        // `convert_rope_params_to_dict`: a non-empty rope_scaling replaces rope_parameters wholesale.
        var rope = try c.decodeIfPresent(RopeParametersObject.self, forKey: .ropeScaling)
        if (rope?.keyCount ?? 0) == 0 {
            rope = try c.decodeIfPresent(RopeParametersObject.self, forKey: .ropeParameters)
        }
        ropeTheta = try rope?.ropeTheta ?? c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? 10000
        ropeScaling = try rope?.scaling(
            maxPositionEmbeddings: maxPositionEmbeddings, headDim: headDim,
            topLevelOriginalMaxPositionEmbeddings: try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings),
            topLevelPartialRotaryFactor: try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)) ?? .none
        guard hiddenAct == "silu" else {
            throw ModelError(.unsupported, "hidden_act '\(hiddenAct)' is not supported; LLaMA uses 'silu'")
        }
        guard numKeyValueHeads > 0, numAttentionHeads % numKeyValueHeads == 0 else {
            throw ModelError(.badConfig,
                "num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        var rope = c.nestedContainer(keyedBy: RopeParametersObject.Key.self, forKey: .ropeParameters)
        func put<T: Encodable>(_ value: T, _ key: String) throws { try rope.encode(value, forKey: .init(stringValue: key)) }
        try put(ropeScaling.typeName, "rope_type")
        try put(ropeTheta, "rope_theta")
        switch ropeScaling {
        case .none: break
        case .linear(let factor), .dynamic(let factor): try put(factor, "factor")
        case .llama3(let factor, let low, let high, let original):
            try put(factor, "factor")
            try put(low, "low_freq_factor")
            try put(high, "high_freq_factor")
            try put(original, "original_max_position_embeddings")
        }
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(mlpBias, forKey: .mlpBias)
        try c.encodeIfPresent(eosTokenID, forKey: .eosTokenID)
    }
}

extension LlamaConfig {
    /// Reads `directory/config.json` of a `LlamaForCausalLM` directory (`model_type` "llama").
    public static func load(directory: URL) throws -> LlamaConfig {
        let (json, path) = try ModelConfigFile.read(directory)
        let modelType = json["model_type"] as? String
        let architectures = json["architectures"] as? [String] ?? []
        guard modelType == "llama" || (modelType == nil && architectures.contains("LlamaForCausalLM")) else {
            throw ModelError(.unsupported,
                "model_type '\(modelType ?? "none")' (architectures \(architectures)) is not supported; the language model must be a LlamaForCausalLM ('llama')",
                path: path)
        }
        let config: LlamaConfig = try ModelConfigFile.decode(json, path: path)
        guard config.hiddenSize > 0, config.numHiddenLayers > 0, config.numAttentionHeads > 0,
              config.headDim > 0, config.vocabSize > 0, config.intermediateSize > 0 else {
            throw ModelError(.badConfig, "hidden_size, num_hidden_layers, num_attention_heads, head_dim, vocab_size and intermediate_size must be positive", path: path)
        }
        return config
    }
}
