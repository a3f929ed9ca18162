import Foundation
import Model

/// The frozen pair a job trains against, opened in one place: both Hugging Face directories, both
/// models (their weights memory-mapped, so processes on a node share the pages; F16/BF16 files through
/// their F32 copies in the node's `F32Cache`), and the fingerprint that checkpoints record and workers
/// are admitted by (DESIGN.md §3, §5, §7).
public struct Backbone {
    public let visionDirectory: VisionBackboneDirectory
    public let languageDirectory: LanguageBackboneDirectory
    public let vision: CLIPVisionModel
    public let language: LlamaModel
    /// The vision weights' fingerprint alone (it keys the feature cache).
    public let visionFingerprint: String
    /// `vision=<fingerprint>;language=<fingerprint>`.
    public let fingerprint: String

    /// Opens both directories; half-precision weights are read from their F32 copies in `cache` (by
    /// default the node's: `$DEHVF_CACHE_DIR`, else `~/.cache/dehvf`), which is created only if needed.
    public static func open(vision: String, language: String, cache: F32Cache = .forThisNode()) throws -> Backbone {
        let visionDirectory = try VisionBackboneDirectory.open(URL(fileURLWithPath: vision), cache: cache)
        let languageDirectory = try LanguageBackboneDirectory.open(URL(fileURLWithPath: language), cache: cache)
        let clip = try CLIPVisionModel(config: visionDirectory.config, weights: visionDirectory.weights)
        let llama = try LlamaModel(config: languageDirectory.config, weights: languageDirectory.weights)
        let visionFingerprint = try visionDirectory.fingerprint()
        return Backbone(visionDirectory: visionDirectory, languageDirectory: languageDirectory, vision: clip,
                        language: llama, visionFingerprint: visionFingerprint,
                        fingerprint: BackboneFingerprint.pair(vision: visionFingerprint, language: try languageDirectory.fingerprint()))
    }
}
