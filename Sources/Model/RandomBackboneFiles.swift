import Foundation

/// The text tower of a full `CLIPModel` (transformers' `CLIPTextConfig` fields that set its tensors).
public struct CLIPTextShape: Sendable {
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int

    public init(hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                vocabSize: Int = 49408, maxPositionEmbeddings: Int = 77) {
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.vocabSize = vocabSize
        self.maxPositionEmbeddings = maxPositionEmbeddings
    }

    /// openai/clip-vit-large-patch14(-336)'s text tower: 12 layers of width 768.
    public static let vitL14 = CLIPTextShape(hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12, numAttentionHeads: 12)
}

/// Large random backbones written straight to disk as Hugging Face directories (for `bench scale`): the
/// tensors are never all in memory, only one chunk of one tensor at a time.
extension RandomBackbone {
    /// A full `CLIPModel`'s tensors as transformers saves them: the vision tower under `vision_model.`,
    /// the text tower under `text_model.`, `visual_projection`, `text_projection` and the scalar
    /// `logit_scale`, with CLIPPreTrainedModel's initialisation. The vision loader reads only the first.
    public static func clipModelLayout(vision v: CLIPVisionConfig, text t: CLIPTextShape, projectionDim: Int) -> [InitialTensor] {
        var out = clipVisionLayout(v)
        let d = t.hiddenSize, l = t.numHiddenLayers
        func normal(_ name: String, _ shape: [Int], _ std: Float) { out.append(InitialTensor(layout: TensorLayout(name, shape: shape), initial: .normal(std: std))) }
        func constant(_ name: String, _ shape: [Int], _ value: Float) { out.append(InitialTensor(layout: TensorLayout(name, shape: shape), initial: .constant(value))) }
        let p = "text_model."
        normal(p + "embeddings.token_embedding.weight", [t.vocabSize, d], 0.02)
        normal(p + "embeddings.position_embedding.weight", [t.maxPositionEmbeddings, d], 0.02)
        out += clipEncoderLayout(prefix: p, width: d, intermediate: t.intermediateSize, layers: l)
        constant(p + "final_layer_norm.weight", [d], 1); constant(p + "final_layer_norm.bias", [d], 0)
        normal("visual_projection.weight", [projectionDim, v.hiddenSize], 1 / Float(v.hiddenSize).squareRoot())
        normal("text_projection.weight", [projectionDim, d], 1 / Float(d).squareRoot())
        constant("logit_scale", [], 2.6592)
        return out
    }

    /// A full `CLIPModel`'s config.json: `vision_config` and `text_config` nested, as transformers writes it.
    public static func clipModelConfig(vision v: CLIPVisionConfig, text t: CLIPTextShape, projectionDim: Int, dtype: String) -> String {
        let text: [String: Any] = [
            "hidden_size": t.hiddenSize, "intermediate_size": t.intermediateSize, "num_hidden_layers": t.numHiddenLayers,
            "num_attention_heads": t.numAttentionHeads, "vocab_size": t.vocabSize,
            "max_position_embeddings": t.maxPositionEmbeddings, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
            "projection_dim": projectionDim, "model_type": "clip_text_model",
        ]
        var vision = clipVisionFields(v)
        vision["projection_dim"] = projectionDim
        return json(["architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": projectionDim,
                     "logit_scale_init_value": 2.6592, "torch_dtype": dtype, "text_config": text, "vision_config": vision])
    }

    /// Writes `layout` into `directory` (which must exist) as `stored` in `shards` files (an index when
    /// more than one), beside `config` as config.json, streaming: values come from a `RepeatedNormals`
    /// block drawn from `seed`, so writing 1.1B values takes seconds, not the minutes independent normals
    /// would. With `seed` nil the files are headers over holes (sparse, every value zero, no disk used):
    /// enough for `coordinator plan`, which reads headers only.
    @discardableResult
    public static func writeDirectory(_ directory: URL, config: String, layout: [InitialTensor],
                                      as stored: SafetensorsWriter.StoredType, shards: Int, seed: UInt64?) throws -> [URL] {
        try config.write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let normals = seed.map { RepeatedNormals(seed: $0) }
        let fill: SafetensorsWriter.Fill? = normals.map { normals in
            { i, offset, values in
                switch layout[i].initial {
                case .constant(let value): values.update(repeating: value)
                case .normal(let std): normals.fill(values, std: std, name: layout[i].name, offset: offset)
                }
            }
        }
        return try SafetensorsWriter.writeSharded(layout.map(\.layout), as: stored, shards: shards, in: directory, fill: fill)
    }
}

/// Normal(0, 1) values from one block of `count` (a prime) values drawn once, read cyclically from a
/// start that depends on the tensor's name: element k of tensor `name` is `block[(start(name) + k) % count]`.
///
/// - warning: for shapes and magnitudes, not statistics. The values repeat with period `count` (1,048,573)
///   and any two tensors are shifted copies of one sequence. The prime period gives every row of a matrix
///   a different shift (no row width below `count` divides it), which is all a forward pass needs to stay
///   finite and of realistic magnitude; it is what lets `bench scale` write 1.1B values in seconds.
public final class RepeatedNormals: Sendable {
    public static let count = 1_048_573
    private let block: [Float]

    public init(seed: UInt64) {
        var rng = InitRNG(seed: seed, name: "RepeatedNormals")
        block = (0..<Self.count).map { _ in rng.normal() }
    }

    /// Writes `std` times elements `offset ..< offset + values.count` of tensor `name` into `values`.
    public func fill(_ values: UnsafeMutableBufferPointer<Float>, std: Float, name: String, offset: Int) {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325   // FNV-1a of the name
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        var j = Int((h % UInt64(Self.count) + UInt64(offset % Self.count)) % UInt64(Self.count))
        block.withUnsafeBufferPointer { b in
            var i = 0
            while i < values.count {
                let n = min(values.count - i, Self.count - j)
                for k in 0..<n { values[i + k] = std * b[j + k] }
                i += n
                j = 0
            }
        }
    }
}
