import Foundation

/// Tiny random frozen backbones for the demo, as Hugging Face would save them: a config.json and
/// tensors with transformers' names. A pure function of the seed.
public enum RandomBackbone {
    /// A CLIPVisionModel with transformers' default initialisation (CLIPPreTrainedModel._init_weights,
    /// initializer_factor 1, initializer_range 0.02; linear biases zero; layer norms identity).
    public static func clipVision(_ c: CLIPVisionConfig, seed: UInt64) -> (config: String, tensors: TensorSet) {
        (json(clipVisionFields(c).merging(["architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model",
                                           "torch_dtype": "float32"]) { $1 }),
         materialize(clipVisionLayout(c), seed: seed))
    }

    /// How a tensor of a random backbone starts: normal(0, std²), or every element the same value.
    public enum Initial: Sendable, Equatable {
        case normal(std: Float)
        case constant(Float)
    }

    /// One tensor of a random backbone: name, shape and how it starts.
    public struct InitialTensor: Sendable {
        public var layout: TensorLayout
        public var initial: Initial
        public var name: String { layout.name }
        public var shape: [Int] { layout.shape }
    }

    /// A CLIP encoder's layers (vision and text towers alike) under `prefix`, in transformers' order and
    /// CLIPPreTrainedModel's initialisation.
    static func clipEncoderLayout(prefix p: String, width d: Int, intermediate: Int, layers l: Int) -> [InitialTensor] {
        let inStd = 1 / Float(d).squareRoot() / Float(2 * l).squareRoot()
        let outStd = 1 / Float(d).squareRoot(), fcStd = 1 / Float(2 * d).squareRoot()
        var t: [InitialTensor] = []
        func normal(_ name: String, _ shape: [Int], _ std: Float) { t.append(InitialTensor(layout: TensorLayout(name, shape: shape), initial: .normal(std: std))) }
        func constant(_ name: String, _ shape: [Int], _ value: Float) { t.append(InitialTensor(layout: TensorLayout(name, shape: shape), initial: .constant(value))) }
        for i in 0..<l {
            let q = p + "encoder.layers.\(i)."
            for proj in ["q_proj", "k_proj", "v_proj"] {
                normal(q + "self_attn.\(proj).weight", [d, d], inStd); constant(q + "self_attn.\(proj).bias", [d], 0)
            }
            normal(q + "self_attn.out_proj.weight", [d, d], outStd); constant(q + "self_attn.out_proj.bias", [d], 0)
            constant(q + "layer_norm1.weight", [d], 1); constant(q + "layer_norm1.bias", [d], 0)
            normal(q + "mlp.fc1.weight", [intermediate, d], fcStd); constant(q + "mlp.fc1.bias", [intermediate], 0)
            normal(q + "mlp.fc2.weight", [d, intermediate], inStd); constant(q + "mlp.fc2.bias", [d], 0)
            constant(q + "layer_norm2.weight", [d], 1); constant(q + "layer_norm2.bias", [d], 0)
        }
        return t
    }

    /// The CLIP vision tower's tensors in transformers' order and initialisation (see `clipVision`), under
    /// `prefix` (`vision_model.` as both CLIPVisionModel and CLIPModel save them).
    public static func clipVisionLayout(_ c: CLIPVisionConfig, prefix p: String = "vision_model.") -> [InitialTensor] {
        let d = c.hiddenSize, l = c.numHiddenLayers
        var t: [InitialTensor] = []
        func normal(_ name: String, _ shape: [Int], _ std: Float) { t.append(InitialTensor(layout: TensorLayout(name, shape: shape), initial: .normal(std: std))) }
        func constant(_ name: String, _ shape: [Int], _ value: Float) { t.append(InitialTensor(layout: TensorLayout(name, shape: shape), initial: .constant(value))) }
        normal(p + "embeddings.class_embedding", [d], 1 / Float(d).squareRoot())
        normal(p + "embeddings.patch_embedding.weight", [d, c.numChannels, c.patchSize, c.patchSize], 0.02)
        normal(p + "embeddings.position_embedding.weight", [c.numPatches + 1, d], 0.02)
        constant(p + "pre_layrnorm.weight", [d], 1); constant(p + "pre_layrnorm.bias", [d], 0)
        t += clipEncoderLayout(prefix: p, width: d, intermediate: c.intermediateSize, layers: l)
        constant(p + "post_layernorm.weight", [d], 1); constant(p + "post_layernorm.bias", [d], 0)
        return t
    }

    /// The vision fields of a CLIP config.json (top level of a CLIPVisionModel's, `vision_config` of a CLIPModel's).
    static func clipVisionFields(_ c: CLIPVisionConfig) -> [String: Any] {
        ["hidden_size": c.hiddenSize, "intermediate_size": c.intermediateSize, "num_hidden_layers": c.numHiddenLayers,
         "num_attention_heads": c.numAttentionHeads, "num_channels": c.numChannels, "image_size": c.imageSize,
         "patch_size": c.patchSize, "hidden_act": c.hiddenAct, "layer_norm_eps": Double(c.layerNormEps),
         "model_type": "clip_vision_model"]
    }

    /// The tensors of `layout` made in memory, each a pure function of (seed, its name).
    static func materialize(_ layout: [InitialTensor], seed: UInt64) -> TensorSet {
        TensorSet(layout.map { t in
            switch t.initial {
            case .normal(let std): return NamedTensor(t.name, randomNormal(t.shape, std: std, seed: seed, name: t.name))
            case .constant(let value): let x = Tensor(zeros: t.shape); x.fill(value); return NamedTensor(t.name, x)
            }
        })
    }

    /// A LlamaForCausalLM: every weight matrix normal(0, 0.02) — transformers' init — times `weightScale`
    /// (the demo uses 10: with a random LLM, tiny weights leave the loss stalled near 2.5); norms identity.
    public static func llama(_ c: LlamaConfig, seed: UInt64, weightScale: Float) -> (config: String, tensors: TensorSet) {
        (json(llamaFields(c, dtype: "float32")), materialize(llamaLayout(c, weightScale: weightScale), seed: seed))
    }

    /// A LlamaForCausalLM's tensors in transformers' order and initialisation (see `llama`).
    public static func llamaLayout(_ c: LlamaConfig, weightScale: Float = 1) -> [InitialTensor] {
        let d = c.hiddenSize, std = 0.02 * weightScale
        var t: [InitialTensor] = []
        func normal(_ name: String, _ shape: [Int]) { t.append(InitialTensor(layout: TensorLayout(name, shape: shape), initial: .normal(std: std))) }
        func ones(_ name: String, _ shape: [Int]) { t.append(InitialTensor(layout: TensorLayout(name, shape: shape), initial: .constant(1))) }
        normal("model.embed_tokens.weight", [c.vocabSize, d])
        for i in 0..<c.numHiddenLayers {
            let q = "model.layers.\(i)."
            ones(q + "input_layernorm.weight", [d])
            normal(q + "self_attn.q_proj.weight", [c.numAttentionHeads * c.headDim, d])
            normal(q + "self_attn.k_proj.weight", [c.numKeyValueHeads * c.headDim, d])
            normal(q + "self_attn.v_proj.weight", [c.numKeyValueHeads * c.headDim, d])
            normal(q + "self_attn.o_proj.weight", [d, c.numAttentionHeads * c.headDim])
            ones(q + "post_attention_layernorm.weight", [d])
            normal(q + "mlp.gate_proj.weight", [c.intermediateSize, d])
            normal(q + "mlp.up_proj.weight", [c.intermediateSize, d])
            normal(q + "mlp.down_proj.weight", [d, c.intermediateSize])
        }
        ones("model.norm.weight", [d])
        if !c.tieWordEmbeddings { normal("lm_head.weight", [c.vocabSize, d]) }
        return t
    }

    /// A LlamaForCausalLM's config.json, as transformers writes it; `dtype` is its `torch_dtype`.
    public static func llamaConfig(_ c: LlamaConfig, dtype: String) -> String { json(llamaFields(c, dtype: dtype)) }

    static func llamaFields(_ c: LlamaConfig, dtype: String) -> [String: Any] {
        let d = c.hiddenSize
        var config: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": d, "intermediate_size": c.intermediateSize, "num_hidden_layers": c.numHiddenLayers,
            "num_attention_heads": c.numAttentionHeads, "num_key_value_heads": c.numKeyValueHeads,
            "head_dim": c.headDim, "vocab_size": c.vocabSize, "rms_norm_eps": Double(c.rmsNormEps),
            "rope_theta": Double(c.ropeTheta), "tie_word_embeddings": c.tieWordEmbeddings, "hidden_act": "silu",
            "max_position_embeddings": c.maxPositionEmbeddings, "attention_bias": false, "mlp_bias": false,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": dtype,
        ]
        switch c.ropeScaling {
        case .none: break
        case .linear(let factor), .dynamic(let factor):
            config["rope_scaling"] = ["rope_type": c.ropeScaling.typeName, "factor": factor]
        case .llama3(let factor, let low, let high, let original):
            config["rope_scaling"] = ["rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                                      "high_freq_factor": high, "original_max_position_embeddings": original]
        }
        return config
    }

    static func randomNormal(_ shape: [Int], std: Float, seed: UInt64, name: String) -> Tensor {
        let x = Tensor(zeros: shape)
        var rng = InitRNG(seed: seed, name: name)
        for i in 0..<x.count { x.data[i] = std * rng.normal() }
        return x
    }

    static func json(_ object: [String: Any]) -> String {
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
