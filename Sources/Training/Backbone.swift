import Foundation
import Model

/// The frozen pair a job trains against, opened in one place: both Hugging Face directories, both
/// models (their weights memory-mapped, so processes on a node share the pages), and the fingerprint
/// that checkpoints record and workers are admitted by (DESIGN.md §5, §7).
public struct Backbone {
    public let visionDirectory: VisionBackboneDirectory
    public let languageDirectory: LanguageBackboneDirectory
    public let vision: CLIPVisionModel
    public let language: LlamaModel
    /// The vision weights' fingerprint alone (it keys the feature cache).
    public let visionFingerprint: String
    /// `vision=<fingerprint>;language=<fingerprint>`.
    public let fingerprint: String

    public static func open(vision: String, language: String) throws -> Backbone {
        let visionDirectory = try VisionBackboneDirectory.open(URL(fileURLWithPath: vision))
        let languageDirectory = try LanguageBackboneDirectory.open(URL(fileURLWithPath: language))
        let clip = try CLIPVisionModel(config: visionDirectory.config, weights: visionDirectory.weights)
        let llama = try LlamaModel(config: languageDirectory.config, weights: languageDirectory.weights)
        let visionFingerprint = try visionDirectory.fingerprint()
        return Backbone(visionDirectory: visionDirectory, languageDirectory: languageDirectory, vision: clip,
                        language: llama, visionFingerprint: visionFingerprint,
                        fingerprint: BackboneFingerprint.pair(vision: visionFingerprint, language: try languageDirectory.fingerprint()))
    }
}
