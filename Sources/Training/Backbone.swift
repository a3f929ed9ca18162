import Foundation
import Model

/// The frozen pair's models, loaded in one place: both Hugging Face directories, both models (their
/// weights memory-mapped, so processes on a node share the pages). Their fingerprint, which checkpoints
/// record and workers are admitted by, is ``JobSetup/fingerprint``.
public struct Backbone {
    public let visionDirectory: VisionBackboneDirectory
    public let languageDirectory: LanguageBackboneDirectory
    public let vision: CLIPVisionModel
    public let language: LlamaModel

    /// The models of a job.
    public static func load(_ setup: JobSetup) throws -> Backbone {
        try load(vision: setup.job.model.vision.path, language: setup.job.model.language.path)
    }

    /// The models in two directories.
    public static func load(vision: String, language: String) throws -> Backbone {
        let visionDirectory = try VisionBackboneDirectory.open(URL(fileURLWithPath: vision))
        let languageDirectory = try LanguageBackboneDirectory.open(URL(fileURLWithPath: language))
        return Backbone(visionDirectory: visionDirectory, languageDirectory: languageDirectory,
                        vision: try CLIPVisionModel(config: visionDirectory.config, weights: visionDirectory.weights),
                        language: try LlamaModel(config: languageDirectory.config, weights: languageDirectory.weights))
    }
}
