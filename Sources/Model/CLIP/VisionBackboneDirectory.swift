import Foundation

/// A vision model directory opened for loading: its config, which of the two layouts it is, and its
/// weights under the tensor-name prefix they actually use.
///
/// `weights` takes names relative to the vision tower (`embeddings.patch_embedding.weight`,
/// `pre_layrnorm.weight`, `encoder.layers.0.self_attn.q_proj.weight`, `post_layernorm.weight`) whether the
/// file spells them `vision_model.encoder...` or `encoder...`; a full CLIPModel's text tower and
/// projections lie outside the tower and are not its concern.
public struct VisionBackboneDirectory {
    public let directory: URL
    public let config: CLIPVisionConfig
    public let architecture: CLIPVisionArchitecture
    /// `"vision_model."` or `""`, detected from the tensor names present.
    public let weightPrefix: String
    public let archive: SafetensorsArchive
    /// The vision tower's tensors under relative names; hand this to the model.
    public let weights: PrefixedWeightSource

    /// Opens `directory`, reading F16/BF16 weight files from their F32 copies in `cache` when one is given
    /// (`Backbone.load` and a loading `JobSetup` pass the node's); without one they are converted into this process's memory.
    public static func open(_ directory: URL, cache: F32Cache? = nil) throws -> VisionBackboneDirectory {
        let (config, architecture) = try CLIPVisionConfig.loadWithArchitecture(directory: directory)
        let archive = try SafetensorsArchive(directory: directory, cache: cache)
        let weights = try towerWeights(archive, path: directory.path)
        return VisionBackboneDirectory(directory: directory, config: config, architecture: architecture,
                                       weightPrefix: weights.prefix, archive: archive, weights: weights)
    }

    /// The vision tower's weights in `source` under names relative to the tower, whichever spelling
    /// (`vision_model.encoder...` or `encoder...`) the file uses. The one place that tells them apart.
    public static func towerWeights(_ source: WeightSource, path: String? = nil) throws -> PrefixedWeightSource {
        let marker = "embeddings.patch_embedding.weight"
        if source.contains("vision_model." + marker) { return PrefixedWeightSource(source, prefix: "vision_model.") }
        if source.contains(marker) { return PrefixedWeightSource(source, prefix: "") }
        throw ModelError(.missingTensor,
            "no CLIP vision weights: neither 'vision_model.\(marker)' nor '\(marker)' is in the safetensors files",
            path: path)
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
