import Foundation
import Model
import TestSupport
import Testing

/// Every golden fixture directory written by transformers (Scripts/make_fixtures.py) loads through the
/// loader: configs parse to what the script asked for, every tensor is taken with its architectural
/// shape, and `finish` finds nothing left over.
@Suite("golden fixture directories load")
struct BackboneFixtureLoadingTests {
    static let cases = ["llama-gqa", "llama-tied-headdim", "bf16"]

    @Test("vision directory loads strictly", arguments: cases)
    func vision(name: String) throws {
        let vision = try VisionBackboneDirectory.open(Fixtures.backbones.appendingPathComponent(name).appendingPathComponent("vision"))
        let c = vision.config
        #expect(c.hiddenSize == 32 && c.numHiddenLayers == 2 && c.numAttentionHeads == 4 && c.patchSize == 8
                && c.imageSize == 32 && c.intermediateSize == 64 && c.numPatches == 16)
        switch name {
        case "llama-gqa":
            #expect(vision.architecture == .clipVisionModel && vision.weightPrefix == "" && c.hiddenAct == "quick_gelu")
        case "llama-tied-headdim":
            #expect(vision.architecture == .clipModel && vision.weightPrefix == "vision_model." && c.hiddenAct == "gelu")
        default:
            #expect(vision.architecture == .clipVisionModel && vision.weightPrefix == "vision_model.")
            #expect(vision.archive.info("vision_model.embeddings.position_ids")?.dtype == .i64)
            #expect(vision.archive.info("vision_model.pre_layrnorm.weight")?.dtype == .bf16)
        }
        var sumOfSquares: Float = 0
        for (tensorName, shape) in expectedCLIPVisionTensors(c) {
            let t = try vision.weights.take(tensorName, shape: shape)
            sumOfSquares += t.array.reduce(0) { $0 + $1 * $1 }
        }
        #expect(sumOfSquares > 100, "the fixture weights are rescaled to O(1), not HF's tiny init")
        try vision.weights.finish(ignoringPrefixes: CLIPVisionModel.unusedCheckpointTensors)
    }

    @Test("language directory loads strictly", arguments: cases)
    func language(name: String) throws {
        let language = try LanguageBackboneDirectory.open(Fixtures.backbones.appendingPathComponent(name).appendingPathComponent("language"))
        let c = language.config
        #expect(c.hiddenSize == 32 && c.numHiddenLayers == 2 && c.numAttentionHeads == 4)
        switch name {
        case "llama-gqa":
            #expect(c.numKeyValueHeads == 2 && c.headDim == 8 && !c.tieWordEmbeddings && c.ropeTheta == 5000
                    && c.vocabSize == 96 && c.rmsNormEps == 1e-5)
        case "llama-tied-headdim":
            #expect(c.numKeyValueHeads == 4 && c.headDim == 16 && c.tieWordEmbeddings && c.ropeTheta == 100000
                    && c.vocabSize == 80 && c.intermediateSize == 48 && c.rmsNormEps == 1e-6)
            #expect(!language.archive.contains("lm_head.weight"))
        default:
            #expect(c.numKeyValueHeads == 1 && c.headDim == 8 && c.ropeTheta == 20000 && c.vocabSize == 64)
            #expect(language.archive.files.count == 2, "transformers sharded this one")
            #expect(language.archive.info("lm_head.weight")?.dtype == .bf16)
        }
        for (tensorName, shape) in expectedLlamaTensors(c) { _ = try language.weights.take(tensorName, shape: shape) }
        try language.weights.finish(ignoringPrefixes: LlamaModel.unusedCheckpointTensors(c))
        #expect(try language.fingerprint().split(separator: ",").count == language.archive.files.count)
    }
}

@Suite("golden fixture inputs and references")
struct BackboneFixtureDataTests {
    @Test("inputs and references have the documented shapes, in safetensors as in HDF5", arguments: BackboneFixtureLoadingTests.cases)
    func shapes(name: String) throws {
        let root = Fixtures.backbones.appendingPathComponent(name)
        let vision = try CLIPVisionConfig.load(directory: root.appendingPathComponent("vision"))
        let language = try LlamaConfig.load(directory: root.appendingPathComponent("language"))
        let inputs = try SafetensorsFile(url: root.appendingPathComponent("inputs.safetensors"))
        let reference = try SafetensorsFile(url: root.appendingPathComponent("reference.safetensors"))
        _ = try inputs.take("pixel_values", shape: [2, 3, vision.imageSize, vision.imageSize])
        let ids = try inputs.int32Values("input_ids", shape: [2, 8])
        let mask = try inputs.int32Values("attention_mask", shape: [2, 8])
        #expect(ids.allSatisfy { $0 >= 0 && Int($0) < language.vocabSize })
        #expect(mask == [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "row 1 is right-padded after 5 tokens")
        #expect(modelError { _ = try inputs.int32Values("pixel_values", shape: [2, 3, 32, 32]) }?.code == .badDType)
        _ = try reference.take("vision/hidden_states", shape: [vision.numHiddenLayers + 1, 2, vision.numPatches + 1, vision.hiddenSize])
        _ = try reference.take("language/hidden_states", shape: [language.numHiddenLayers + 1, 2, 8, language.hiddenSize])
        let logits = try reference.take("language/logits", shape: [2, 8, language.vocabSize])
        #expect(logits.array.allSatisfy { $0.isFinite })
        try reference.finish(ignoringPrefixes: [])
        for file in ["inputs.h5", "reference.h5"] {
            #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent(file).path))
        }
    }
}
