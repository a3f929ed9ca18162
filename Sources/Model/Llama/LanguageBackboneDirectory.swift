import Foundation

/// A `LlamaForCausalLM` directory opened for loading. `weights` takes the checkpoint's own names
/// (`model.embed_tokens.weight`, `model.layers.0.self_attn.q_proj.weight`, `model.norm.weight`,
/// `lm_head.weight`).
public struct LanguageBackboneDirectory {
    public let directory: URL
    public let config: LlamaConfig
    public let archive: SafetensorsArchive
    /// The checkpoint's tensors under their own names; hand this to the model.
    public var weights: WeightSource { archive }

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
        return LanguageBackboneDirectory(directory: directory, config: config, archive: archive)
    }

    /// The fingerprint of these weights and the config fields that change the math (DESIGN §5).
    public func fingerprint() throws -> String { "\(try BackboneFingerprint.of(directory: directory))|config:\(config.mathDigest)" }
}
