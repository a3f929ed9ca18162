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
