import Foundation

/// A vision model directory opened for loading: its config, which of the two layouts it is, and its
/// weights under the tensor-name prefix they actually use.
///
/// `weights` takes names relative to the vision tower (`embeddings.patch_embedding.weight`,
/// `pre_layrnorm.weight`, `encoder.layers.0.self_attn.q_proj.weight`, `post_layernorm.weight`) whether the
/// file spells them `vision_model.encoder...` or `encoder...`. Its `finish` ignores the parts a vision
/// encoder never reads: a full CLIPModel's text tower and projections, and the legacy `position_ids` buffer.
public struct VisionBackboneDirectory {
    public let directory: URL
    public let config: CLIPVisionConfig
    public let architecture: CLIPVisionArchitecture
    /// `"vision_model."` or `""`, detected from the tensor names present.
    public let weightPrefix: String
    public let archive: SafetensorsArchive
    /// The vision tower's tensors under relative names; hand this to the model.
    public let weights: PrefixedWeightSource

    /// Raw-name prefixes that `weights.finish` ignores (besides those passed to it).
    public static func ignoredPrefixes(weightPrefix: String) -> [String] {
        ["text_model.", "text_projection.", "visual_projection.", "logit_scale",
         weightPrefix + "embeddings.position_ids"]
    }

    public static func open(_ directory: URL) throws -> VisionBackboneDirectory {
        let (config, architecture) = try CLIPVisionConfig.loadWithArchitecture(directory: directory)
        let archive = try SafetensorsArchive(directory: directory)
        let marker = "embeddings.patch_embedding.weight"
        let prefix: String
        if archive.contains("vision_model." + marker) {
            prefix = "vision_model."
        } else if archive.contains(marker) {
            prefix = ""
        } else {
            throw ModelError(.missingTensor,
                "no CLIP vision weights: neither 'vision_model.\(marker)' nor '\(marker)' is in the safetensors files",
                path: directory.path)
        }
        return VisionBackboneDirectory(
            directory: directory, config: config, architecture: architecture, weightPrefix: prefix,
            archive: archive,
            weights: PrefixedWeightSource(archive, prefix: prefix, alsoIgnoring: ignoredPrefixes(weightPrefix: prefix)))
    }

    /// The fingerprint of these weights (DESIGN §5).
    public func fingerprint() throws -> String { try BackboneFingerprint.of(directory: directory) }
}

/// A `LlamaForCausalLM` directory opened for loading. `weights` takes the checkpoint's own names
/// (`model.embed_tokens.weight`, `model.layers.0.self_attn.q_proj.weight`, `model.norm.weight`,
/// `lm_head.weight`); its `finish` ignores legacy `rotary_emb.inv_freq` buffers and, when the embeddings
/// are tied, a stored `lm_head.weight` copy.
public struct LanguageBackboneDirectory {
    public let directory: URL
    public let config: LlamaConfig
    public let archive: SafetensorsArchive
    public let weights: PrefixedWeightSource

    public static func ignoredPrefixes(config: LlamaConfig) -> [String] {
        (0..<config.numHiddenLayers).map { "model.layers.\($0).self_attn.rotary_emb." }
            + (config.tieWordEmbeddings ? ["lm_head.weight"] : [])
    }

    public static func open(_ directory: URL) throws -> LanguageBackboneDirectory {
        let config = try LlamaConfig.load(directory: directory)
        let archive = try SafetensorsArchive(directory: directory)
        guard archive.contains("model.embed_tokens.weight") else {
            throw ModelError(.missingTensor,
                "no LLaMA weights: 'model.embed_tokens.weight' is not in the safetensors files (a bare LlamaModel checkpoint without the 'model.' prefix is not supported)",
                path: directory.path)
        }
        if !config.tieWordEmbeddings && !archive.contains("lm_head.weight") {
            throw ModelError(.missingTensor,
                "'lm_head.weight' is missing and config.json has tie_word_embeddings false", path: directory.path)
        }
        return LanguageBackboneDirectory(
            directory: directory, config: config, archive: archive,
            weights: PrefixedWeightSource(archive, prefix: "", alsoIgnoring: ignoredPrefixes(config: config)))
    }

    public func fingerprint() throws -> String { try BackboneFingerprint.of(directory: directory) }
}
