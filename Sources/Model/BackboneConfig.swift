import Foundation

/// The vision tower's `config.json`, from a `CLIPVisionModel` directory or the `vision_config` of a full
/// `CLIPModel` directory. Field names follow transformers' `CLIPVisionConfig`.
public struct CLIPVisionConfig: Codable, Sendable, Equatable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numChannels: Int
    public var imageSize: Int
    public var patchSize: Int
    public var layerNormEps: Float
    public var hiddenAct: String

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numChannels = "num_channels", imageSize = "image_size", patchSize = "patch_size"
        case layerNormEps = "layer_norm_eps", hiddenAct = "hidden_act"
    }

    public init(hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numChannels: Int = 3, imageSize: Int, patchSize: Int, layerNormEps: Float = 1e-5,
                hiddenAct: String = "quick_gelu") {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numChannels = numChannels
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.layerNormEps = layerNormEps
        self.hiddenAct = hiddenAct
    }

    /// transformers' defaults for keys a config.json may omit.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? 768
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 3072
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? 12
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? 12
        numChannels = try c.decodeIfPresent(Int.self, forKey: .numChannels) ?? 3
        imageSize = try c.decodeIfPresent(Int.self, forKey: .imageSize) ?? 224
        patchSize = try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? 32
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "quick_gelu"
    }

    public var headDim: Int { hiddenSize / numAttentionHeads }
    public var numPatches: Int { (imageSize / patchSize) * (imageSize / patchSize) }
}

/// A `LlamaForCausalLM` `config.json`. Field names follow transformers' `LlamaConfig`; `rope_theta` may be
/// at top level or inside `rope_parameters` (newer transformers), `head_dim` may be absent (then
/// hidden_size / num_attention_heads), `num_key_value_heads` may be absent (then = num_attention_heads).
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
    public var tieWordEmbeddings: Bool
    public var hiddenAct: String
    public var attentionBias: Bool
    public var mlpBias: Bool

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", vocabSize = "vocab_size"
        case rmsNormEps = "rms_norm_eps", ropeTheta = "rope_theta"
        case tieWordEmbeddings = "tie_word_embeddings", hiddenAct = "hidden_act"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias"
        case ropeParameters = "rope_parameters", ropeScaling = "rope_scaling"
    }

    struct RopeParameters: Codable {
        var ropeTheta: Float?
        var ropeType: String?
        enum CodingKeys: String, CodingKey { case ropeTheta = "rope_theta", ropeType = "rope_type" }
    }

    public init(hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int? = nil, headDim: Int? = nil, vocabSize: Int, rmsNormEps: Float = 1e-6,
                ropeTheta: Float = 10000, tieWordEmbeddings: Bool = false) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads ?? numAttentionHeads
        self.headDim = headDim ?? hiddenSize / numAttentionHeads
        self.vocabSize = vocabSize
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.tieWordEmbeddings = tieWordEmbeddings
        self.hiddenAct = "silu"
        self.attentionBias = false
        self.mlpBias = false
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
        let params = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeParameters)
        let scaling = try c.decodeIfPresent(RopeParameters.self, forKey: .ropeScaling)
        for p in [params, scaling] {
            if let type = p?.ropeType, type != "default" {
                throw ModelError(.unsupported,
                    "rope type '\(type)' is not supported; only default rotary embeddings are implemented")
            }
        }
        ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta) ?? params?.ropeTheta ?? 10000
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
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(hiddenAct, forKey: .hiddenAct)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(mlpBias, forKey: .mlpBias)
    }
}

// MARK: - Reading a model directory's config.json

/// Which transformers class a vision directory was saved from.
public enum CLIPVisionArchitecture: String, Sendable {
    /// `CLIPVisionModel` (or `...WithProjection`): `model_type` "clip_vision_model", fields at top level.
    case clipVisionModel = "CLIPVisionModel"
    /// Full `CLIPModel`: `model_type` "clip", the vision fields under `vision_config`.
    case clipModel = "CLIPModel"
}

extension CLIPVisionConfig {
    /// Reads `directory/config.json` of a `CLIPVisionModel` or full `CLIPModel` directory.
    public static func load(directory: URL) throws -> CLIPVisionConfig {
        try loadWithArchitecture(directory: directory).config
    }

    /// Reads `directory/config.json` and says which of the two layouts it is.
    public static func loadWithArchitecture(directory: URL) throws
        -> (config: CLIPVisionConfig, architecture: CLIPVisionArchitecture) {
        let (json, path) = try ModelConfigFile.read(directory)
        let modelType = json["model_type"] as? String
        let architectures = json["architectures"] as? [String] ?? []
        let architecture: CLIPVisionArchitecture
        let fields: [String: Any]
        if modelType == "clip" || (modelType == nil && json["vision_config"] != nil) {
            guard let nested = json["vision_config"] as? [String: Any] else {
                throw ModelError(.badConfig, "a CLIPModel config.json needs a 'vision_config' object", path: path)
            }
            architecture = .clipModel
            fields = nested
        } else if modelType == "clip_vision_model"
                    || (modelType == nil && architectures.contains(where: { $0.hasPrefix("CLIPVisionModel") })) {
            architecture = .clipVisionModel
            fields = json
        } else {
            throw ModelError(.unsupported,
                "model_type '\(modelType ?? "none")' (architectures \(architectures)) is not a CLIP vision model; expected a CLIPVisionModel ('clip_vision_model') or CLIPModel ('clip') directory",
                path: path)
        }
        let config: CLIPVisionConfig = try ModelConfigFile.decode(fields, path: path)
        guard config.hiddenSize > 0, config.numAttentionHeads > 0, config.hiddenSize % config.numAttentionHeads == 0 else {
            throw ModelError(.badConfig, "hidden_size \(config.hiddenSize) is not a multiple of num_attention_heads \(config.numAttentionHeads)", path: path)
        }
        guard config.patchSize > 0, config.imageSize > 0, config.imageSize % config.patchSize == 0 else {
            throw ModelError(.badConfig, "image_size \(config.imageSize) is not a multiple of patch_size \(config.patchSize)", path: path)
        }
        guard config.numHiddenLayers > 0, config.intermediateSize > 0, config.numChannels > 0 else {
            throw ModelError(.badConfig, "num_hidden_layers, intermediate_size and num_channels must be positive", path: path)
        }
        return (config, architecture)
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

/// Reading `config.json` itself: present, a JSON object, decodable into a config type.
enum ModelConfigFile {
    static func read(_ directory: URL) throws -> (json: [String: Any], path: String) {
        let url = directory.appendingPathComponent("config.json")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError(.fileNotFound, "model directory does not exist (check the model path in the job config)",
                             path: directory.path)
        }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ModelError(.fileNotFound, "config.json is missing: a Hugging Face model directory needs one",
                             path: url.path)
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw ModelError(.badConfig, "config.json is not valid JSON: \(error.localizedDescription)", path: url.path)
        }
        guard let json = object as? [String: Any] else {
            throw ModelError(.badConfig, "config.json is not a JSON object", path: url.path)
        }
        return (json, url.path)
    }

    static func decode<T: Decodable>(_ fields: [String: Any], path: String) throws -> T {
        do {
            let data = try JSONSerialization.data(withJSONObject: fields)
            return try JSONDecoder().decode(T.self, from: data)
        } catch let error as ModelError {
            throw ModelError(error.code, error.message, path: path)
        } catch DecodingError.typeMismatch(_, let context), DecodingError.dataCorrupted(let context) {
            let key = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ModelError(.badConfig, "config.json field '\(key)' has the wrong type: \(context.debugDescription)", path: path)
        } catch {
            throw ModelError(.badConfig, "config.json could not be read: \(error)", path: path)
        }
    }
}
