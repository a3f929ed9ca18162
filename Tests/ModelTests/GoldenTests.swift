// Rename to GoldenTests.swift once CLIPVisionModel and LlamaModel are merged into this branch.
import Foundation
import Model
import TestSupport
import Testing

/// The Swift CLIP and LLaMA forward passes against transformers' outputs on the golden fixtures
/// (Tests/Fixtures/backbones, made by Scripts/make_fixtures.py): every hidden state and the logits.
///
/// Tolerance: both sides compute in float32 but with different summation orders (OpenBLAS vs PyTorch
/// kernels), about 1e-6 relative per reduction, compounded through 2 layers, softmax and norms; values
/// are O(1) (logits up to ~34). Measured against the core engineer's work-in-progress forward passes:
/// max |diff| 1e-6..7e-6 everywhere. 2e-5 x max(1, max|reference|) leaves a 10x margin for that, while a
/// wrong RoPE theta, head_dim, GQA grouping, activation, mask or tie is off by O(0.1..1).
@Suite("backbones match transformers")
struct GoldenTests {
    static let cases = ["llama-gqa", "llama-tied-headdim", "bf16"]

    func expectClose(_ ours: Tensor, _ reference: Tensor, _ what: String,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(ours.shape == reference.shape, "\(what): shape \(ours.shape) vs \(reference.shape)",
                sourceLocation: sourceLocation)
        guard ours.shape == reference.shape else { return }
        var maxDiff: Float = 0, maxRef: Float = 0
        for i in 0..<ours.count {
            maxDiff = max(maxDiff, abs(ours.data[i] - reference.data[i]))
            maxRef = max(maxRef, abs(reference.data[i]))
        }
        #expect(maxDiff <= 2e-5 * max(1, maxRef), "\(what): max |diff| \(maxDiff), max |ref| \(maxRef)",
                sourceLocation: sourceLocation)
    }

    /// `reference[index]` of a stacked [K, ...] tensor.
    func slice(_ stacked: Tensor, _ index: Int) -> Tensor {
        let inner = Array(stacked.shape.dropFirst())
        let n = inner.reduce(1, *)
        return Tensor(shape: inner, values: Array(stacked.buffer[(index * n)..<((index + 1) * n)]))
    }

    @Test("CLIP vision hidden states", arguments: cases)
    func vision(name: String) throws {
        let root = Fixtures.backbones.appendingPathComponent(name)
        let directory = try VisionBackboneDirectory.open(root.appendingPathComponent("vision"))
        let model = try CLIPVisionModel(config: directory.config, weights: directory.weights)
        let inputs = try SafetensorsFile(url: root.appendingPathComponent("inputs.safetensors"))
        let reference = try SafetensorsFile(url: root.appendingPathComponent("reference.safetensors"))
        let c = directory.config
        let pixels = try inputs.take("pixel_values", shape: [2, c.numChannels, c.imageSize, c.imageSize])
        let expected = try reference.take("vision/hidden_states",
                                          shape: [c.numHiddenLayers + 1, 2, c.numPatches + 1, c.hiddenSize])
        let hidden = try model.forward(pixelValues: pixels)
        #expect(hidden.count == c.numHiddenLayers + 1)
        for (j, h) in hidden.enumerated() { expectClose(h, slice(expected, j), "\(name) vision hidden_states[\(j)]") }
    }

    @Test("LLaMA hidden states and logits, with a right-padded row", arguments: cases)
    func language(name: String) throws {
        let root = Fixtures.backbones.appendingPathComponent(name)
        let directory = try LanguageBackboneDirectory.open(root.appendingPathComponent("language"))
        let model = try LlamaModel(config: directory.config, weights: directory.weights)
        let inputs = try SafetensorsFile(url: root.appendingPathComponent("inputs.safetensors"))
        let reference = try SafetensorsFile(url: root.appendingPathComponent("reference.safetensors"))
        let c = directory.config, B = 2, T = 8
        let ids = try inputs.int32Values("input_ids", shape: [B, T])
        let mask = try inputs.int32Values("attention_mask", shape: [B, T])
        let keyMask = Tensor(shape: [B, T], values: mask.map(Float.init))
        let workspace = model.makeWorkspace(batch: B, length: T, training: false)
        let embeddings = try model.embed(ids: ids, batch: B, length: T)
        let (final, hidden) = try model.forward(embeddings: embeddings, keyMask: keyMask, workspace: workspace,
                                                outputHiddenStates: true)
        let expected = try reference.take("language/hidden_states", shape: [c.numHiddenLayers + 1, B, T, c.hiddenSize])
        #expect(hidden.count == c.numHiddenLayers + 1)
        for (j, h) in hidden.enumerated() { expectClose(h, slice(expected, j), "\(name) language hidden_states[\(j)]") }
        expectClose(model.logits(final), try reference.take("language/logits", shape: [B, T, c.vocabSize]),
                    "\(name) logits")
    }
}
