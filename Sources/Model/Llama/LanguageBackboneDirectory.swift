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

    /// Opens `directory`, reading F16/BF16 weight files from their F32 copies in `cache` when one is given
    /// (`Backbone.load` and a loading `JobSetup` pass the node's); without one they are converted into this process's memory.
    public static func open(_ directory: URL, cache: F32Cache? = nil) throws -> LanguageBackboneDirectory {
        let config = try LlamaConfig.load(directory: directory)
        let archive = try SafetensorsArchive(directory: directory, cache: cache)
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
    /// `.streaming` hashes the files with read(2) for a process that will not load the weights (see
    /// `BackboneFingerprint.Reading`); the value is the same.
    public func fingerprint(reading: BackboneFingerprint.Reading = .mapped) throws -> String {
        let weights = reading == .mapped ? try BackboneFingerprint.of(archive: archive)
            : try BackboneFingerprint.of(directory: directory, reading: reading)
        return "\(weights)|config:\(config.mathDigest)"
    }
}
