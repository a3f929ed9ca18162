import Foundation
import Model
import TestSupport

/// The bytes of a safetensors file with the given header text and data section, optionally declaring a
/// header length other than the real one (to make lying files).
func rawSafetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
    let json = Data(header.utf8)
    var out = Data()
    withUnsafeBytes(of: (declaredLength ?? UInt64(json.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(json)
    out.append(contentsOf: data)
    return out
}

/// The error `body` throws as a ModelError, or nil if it does not throw one.
func modelError(_ body: () throws -> Void) -> ModelError? {
    do { try body() } catch let error as ModelError { return error } catch { return nil }
    return nil
}

/// Every tensor a CLIP vision tower holds, relative to its prefix, with its shape.
func expectedCLIPVisionTensors(_ c: CLIPVisionConfig) -> [(String, [Int])] {
    let d = c.hiddenSize
    var out: [(String, [Int])] = [
        ("embeddings.class_embedding", [d]),
        ("embeddings.patch_embedding.weight", [d, c.numChannels, c.patchSize, c.patchSize]),
        ("embeddings.position_embedding.weight", [c.numPatches + 1, d]),
        ("pre_layrnorm.weight", [d]), ("pre_layrnorm.bias", [d]),
        ("post_layernorm.weight", [d]), ("post_layernorm.bias", [d]),
    ]
    for i in 0..<c.numHiddenLayers {
        let p = "encoder.layers.\(i)."
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out += [(p + "self_attn.\(proj).weight", [d, d]), (p + "self_attn.\(proj).bias", [d])]
        }
        for norm in ["layer_norm1", "layer_norm2"] {
            out += [(p + "\(norm).weight", [d]), (p + "\(norm).bias", [d])]
        }
        out += [(p + "mlp.fc1.weight", [c.intermediateSize, d]), (p + "mlp.fc1.bias", [c.intermediateSize]),
                (p + "mlp.fc2.weight", [d, c.intermediateSize]), (p + "mlp.fc2.bias", [d])]
    }
    return out
}

/// Every tensor a LlamaForCausalLM holds under the checkpoint's names, with its shape.
func expectedLlamaTensors(_ c: LlamaConfig) -> [(String, [Int])] {
    let d = c.hiddenSize, q = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
    var out: [(String, [Int])] = [("model.embed_tokens.weight", [c.vocabSize, d]), ("model.norm.weight", [d])]
    if !c.tieWordEmbeddings { out.append(("lm_head.weight", [c.vocabSize, d])) }
    for i in 0..<c.numHiddenLayers {
        let p = "model.layers.\(i)."
        out += [(p + "input_layernorm.weight", [d]), (p + "post_attention_layernorm.weight", [d]),
                (p + "self_attn.q_proj.weight", [q, d]), (p + "self_attn.k_proj.weight", [kv, d]),
                (p + "self_attn.v_proj.weight", [kv, d]), (p + "self_attn.o_proj.weight", [d, q]),
                (p + "mlp.gate_proj.weight", [c.intermediateSize, d]), (p + "mlp.up_proj.weight", [c.intermediateSize, d]),
                (p + "mlp.down_proj.weight", [d, c.intermediateSize])]
    }
    return out
}
