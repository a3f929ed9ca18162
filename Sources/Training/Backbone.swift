import Foundation
import Model

/// The frozen pair's models, loaded in one place: both Hugging Face directories, both models (their
/// weights memory-mapped, so processes on a node share the pages; F16/BF16 files through their F32
/// copies in the node's `F32Cache`). Their fingerprint, which checkpoints record and workers are admitted
/// by, is ``JobSetup/fingerprint`` (DESIGN.md §3, §5, §7).
public struct Backbone {
    public let visionDirectory: VisionBackboneDirectory
    public let languageDirectory: LanguageBackboneDirectory
    public let vision: CLIPVisionModel
    public let language: LlamaModel

    /// The models of a job, from the directories its setup opened (with the node's F32 cache when the
    /// setup was made for loading).
    public static func load(_ setup: JobSetup) throws -> Backbone {
        try load(visionDirectory: setup.visionDirectory, languageDirectory: setup.languageDirectory)
    }

    /// The models in two directories; half-precision weights are read from their F32 copies in `cache`
    /// (by default the node's: `$DEHVF_CACHE_DIR`, else `~/.cache/dehvf`), created only if needed.
    public static func load(vision: String, language: String, cache: F32Cache = .forThisNode()) throws -> Backbone {
        try load(visionDirectory: try VisionBackboneDirectory.open(URL(fileURLWithPath: vision), cache: cache),
                 languageDirectory: try LanguageBackboneDirectory.open(URL(fileURLWithPath: language), cache: cache))
    }

    static func load(visionDirectory: VisionBackboneDirectory, languageDirectory: LanguageBackboneDirectory) throws -> Backbone {
        Backbone(visionDirectory: visionDirectory, languageDirectory: languageDirectory,
                 vision: try CLIPVisionModel(config: visionDirectory.config, weights: visionDirectory.weights),
                 language: try LlamaModel(config: languageDirectory.config, weights: languageDirectory.weights))
    }
}
