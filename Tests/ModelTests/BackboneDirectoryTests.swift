import Foundation
import Model
import TestSupport
import Testing

/// Opening model directories: config detection, prefix detection, and each error a user can cause.
@Suite("model directory loading")
struct BackboneDirectoryTests {
    static let visionFields = #""hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 8, "patch_size": 4, "hidden_act": "gelu""#
    static let llamaConfig = #"{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10, "tie_word_embeddings": true, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}"#

    /// Writes every tensor of a CLIP vision tower (zeros) under `prefix`, plus `extra`.
    func writeVisionWeights(_ config: CLIPVisionConfig, prefix: String, extra: [(String, Tensor)] = [], to url: URL) throws {
        let tensors = expectedCLIPVisionTensors(config).map { (prefix + $0.0, Tensor(zeros: $0.1)) }
        try SafetensorsWriter.write(TensorSet(tensors + extra), to: url)
    }

    @Test("a CLIPVisionModel directory whose names have no prefix")
    func visionWithoutPrefix() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        try dir.write("config.json", #"{"model_type": "clip_vision_model", \#(Self.visionFields)}"#)
        let config = try CLIPVisionConfig.load(directory: dir.url)
        #expect(config.hiddenSize == 8 && config.numPatches == 4 && config.hiddenAct == "gelu")
        try writeVisionWeights(config, prefix: "", extra: [("embeddings.position_ids", Tensor(zeros: [1, 5]))],
                               to: dir.fileURL("model.safetensors"))
        let vision = try VisionBackboneDirectory.open(dir.url)
        #expect(vision.architecture == .clipVisionModel && vision.weightPrefix == "")
        for (name, shape) in expectedCLIPVisionTensors(config) { _ = try vision.weights.take(name, shape: shape) }
        try vision.weights.finish(ignoringPrefixes: CLIPVisionModel.unusedCheckpointTensors)
    }

    @Test("a full CLIPModel directory: vision_config nested, vision_model. prefix, text tower ignored")
    func fullCLIP() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        try dir.write("config.json", #"{"model_type": "clip", "text_config": {"hidden_size": 4}, "vision_config": {\#(Self.visionFields)}}"#)
        let config = try CLIPVisionConfig.load(directory: dir.url)
        let extra: [(String, Tensor)] = [("text_model.embeddings.token_embedding.weight", Tensor(zeros: [3, 4])),
                                         ("visual_projection.weight", Tensor(zeros: [4, 8])),
                                         ("text_projection.weight", Tensor(zeros: [4, 4])),
                                         ("logit_scale", Tensor(zeros: []))]
        try writeVisionWeights(config, prefix: "vision_model.", extra: extra, to: dir.fileURL("model.safetensors"))
        let vision = try VisionBackboneDirectory.open(dir.url)
        #expect(vision.architecture == .clipModel && vision.weightPrefix == "vision_model.")
        #expect(vision.weights.names.sorted() == expectedCLIPVisionTensors(config).map(\.0).sorted())
        for (name, shape) in expectedCLIPVisionTensors(config) where name != "pre_layrnorm.weight" {
            _ = try vision.weights.take(name, shape: shape)
        }
        let unused = modelError { try vision.weights.finish(ignoringPrefixes: CLIPVisionModel.unusedCheckpointTensors) }
        #expect(unused?.code == .unexpectedTensor)
        #expect(unused?.message.contains("1 tensor(s) were never used by the model: vision_model.pre_layrnorm.weight;") == true,
                "\(unused?.message ?? "no error")")
        _ = try vision.weights.take("pre_layrnorm.weight", shape: [8])
        try vision.weights.finish(ignoringPrefixes: CLIPVisionModel.unusedCheckpointTensors)
    }

    @Test("a LlamaForCausalLM directory with tied embeddings and a stored lm_head copy")
    func llama() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        try dir.write("config.json", Self.llamaConfig)
        let config = try LlamaConfig.load(directory: dir.url)
        #expect(config.ropeTheta == 500000 && config.numKeyValueHeads == 1 && config.headDim == 4 && config.tieWordEmbeddings)
        let tensors = expectedLlamaTensors(config).map { ($0.0, Tensor(zeros: $0.1)) }
            + [("lm_head.weight", Tensor(zeros: [10, 8])),
               ("model.layers.0.self_attn.rotary_emb.inv_freq", Tensor(zeros: [2]))]
        try SafetensorsWriter.write(TensorSet(tensors), as: .bf16, to: dir.fileURL("model.safetensors"))
        let language = try LanguageBackboneDirectory.open(dir.url)
        for (name, shape) in expectedLlamaTensors(config) { _ = try language.weights.take(name, shape: shape) }
        try language.weights.finish(ignoringPrefixes: LlamaModel.unusedCheckpointTensors(config))
        #expect(try language.fingerprint().hasPrefix("model.safetensors:"))
    }

    @Test("errors a user can cause, each with its code and a message that says which file",
          arguments: [
            ("missing directory", nil, ModelError.Code.fileNotFound, "does not exist"),
            ("no config", "", .fileNotFound, "config.json is missing"),
            ("bad JSON", "{\"model_type\": ", .badConfig, "not valid JSON"),
            ("not an object", "[1]", .badConfig, "not a JSON object"),
            ("other architecture", #"{"model_type": "siglip_vision_model"}"#, .unsupported, "siglip_vision_model"),
            ("CLIPModel without vision_config", #"{"model_type": "clip", "vision_config": 3}"#, .badConfig, "vision_config"),
            ("wrong field type", #"{"model_type": "clip_vision_model", "hidden_size": "big"}"#, .badConfig, "hidden_size"),
            ("indivisible heads", #"{"model_type": "clip_vision_model", "hidden_size": 10, "num_attention_heads": 4}"#, .badConfig, "multiple"),
            ("patch does not divide image", #"{"model_type": "clip_vision_model", "image_size": 30, "patch_size": 8}"#, .badConfig, "patch_size"),
          ] as [(String, String?, ModelError.Code, String)])
    func visionConfigErrors(label: String, config: String?, code: ModelError.Code, phrase: String) throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        var target = dir.url
        if let config {
            if !config.isEmpty { try dir.write("config.json", config) }
        } else {
            target = dir.fileURL("absent")
        }
        let error = modelError { _ = try CLIPVisionConfig.load(directory: target) }
        #expect(error?.code == code, "\(label): \(error?.description ?? "no error")")
        #expect(error?.message.contains(phrase) == true, "\(label): \(error?.description ?? "no error")")
        #expect(error?.path?.hasPrefix(target.path) == true, "\(label)")
    }

    @Test("language errors: a CLIP directory, a non-llama model, missing weights, an untied model without lm_head")
    func languageErrors() throws {
        let dir = try TemporaryDirectory()
        defer { dir.cleanup() }
        try dir.write("config.json", #"{"model_type": "clip_vision_model"}"#)
        #expect(modelError { _ = try LlamaConfig.load(directory: dir.url) }?.code == .unsupported)
        try dir.write("config.json", #"{"model_type": "mistral", "architectures": ["MistralForCausalLM"]}"#)
        #expect(modelError { _ = try LlamaConfig.load(directory: dir.url) }?.message.contains("mistral") == true)
        try dir.write("config.json", #"{"model_type": "llama", "hidden_act": "gelu"}"#)
        #expect(modelError { _ = try LlamaConfig.load(directory: dir.url) }?.code == .unsupported)

        try dir.write("config.json", Self.llamaConfig.replacingOccurrences(of: "\"tie_word_embeddings\": true", with: "\"tie_word_embeddings\": false"))
        let noWeights = modelError { _ = try LanguageBackboneDirectory.open(dir.url) }
        #expect(noWeights?.code == .fileNotFound && noWeights?.message.contains("model.safetensors") == true)
        let config = try LlamaConfig.load(directory: dir.url)
        let tensors = expectedLlamaTensors(config).filter { $0.0 != "lm_head.weight" }.map { ($0.0, Tensor(zeros: $0.1)) }
        try SafetensorsWriter.write(TensorSet(tensors), to: dir.fileURL("model.safetensors"))
        #expect(modelError { _ = try LanguageBackboneDirectory.open(dir.url) }?.message.contains("lm_head.weight") == true)

        try SafetensorsWriter.write(TensorSet([("model.layers.0.mlp.up_proj.weight", Tensor(zeros: [1]))]), to: dir.fileURL("model.safetensors"))
        #expect(modelError { _ = try LanguageBackboneDirectory.open(dir.url) }?.message.contains("model.embed_tokens.weight") == true)
        try dir.write("config.json", #"{"model_type": "clip_vision_model"}"#)
        #expect(modelError { _ = try VisionBackboneDirectory.open(dir.url) }?.code == .missingTensor)
    }
}
