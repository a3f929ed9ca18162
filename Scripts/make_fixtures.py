#!/usr/bin/env python3
"""Writes the golden backbone fixtures under Tests/Fixtures/backbones/: tiny random CLIP vision and LLaMA
models saved as transformers saves them, plus inputs and transformers' own outputs for them.

Needs: pip install torch transformers safetensors h5py. Run from anywhere:
    python3 Scripts/make_fixtures.py
CI never runs this; the outputs are committed (well under 2 MB). Everything is seeded, but a different
torch/transformers version may produce different random weights: regenerate all cases together.
The RoPE-scaling cases (rope-*) are written by Scripts/make_rope_fixtures.py, which reuses this file's helpers.

Each case is Tests/Fixtures/backbones/<case>/{vision/, language/, inputs.h5, reference.h5}:
- vision/: a CLIPVisionModel or full CLIPModel directory (config.json + safetensors). transformers 5 saves a
  CLIPVisionModel with unprefixed names (embeddings..., encoder...) and a CLIPModel with vision_model.*;
  the bf16 case rewrites its CLIPVisionModel in the transformers 4 layout (vision_model.*), so both
  spellings are covered;
- language/: a LlamaForCausalLM directory;
- inputs.h5: pixel_values float32 [B,3,H,W] (already normalised), input_ids int32 [B,T],
  attention_mask int32 [B,T] (row 1 right-padded);
- reference.h5: vision/hidden_states float32 [Lv+1,B,1+Np,Dv], language/hidden_states float32 [L+1,B,T,d],
  language/logits float32 [B,T,V], from output_hidden_states=True, float32, eager attention, with the models
  reloaded from the files written (so the reference is what transformers reads from those exact files).
  Position ids are 0..T-1 on every row; padded keys are masked; padded query rows are kept.
- inputs.safetensors, reference.safetensors: the same arrays under the same names, for Swift tests whose
  target does not link HDF5.

HF's default init (std 0.02) would make every attention uniform and every output near zero, so weights are
redrawn at O(1) scale: linear weights N(0, 1/fan_in), embeddings N(0, 1), norm weights 1 + N(0, 0.1^2),
biases N(0, 0.1^2).
"""
import json
import os
import shutil

import h5py
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import (CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, LlamaConfig,
                          LlamaForCausalLM)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "backbones")
B, T = 2, 8
PADDED_LENGTH = 5  # real tokens on row 1


def rescale_(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name:  # LayerNorm / RMSNorm weights
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)
            elif "embed" in name or name.endswith("class_embedding"):
                if "patch_embedding" in name:
                    fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                    p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
                else:
                    p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def vision_config(act):
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_channels=3, image_size=32, patch_size=8, hidden_act=act, layer_norm_eps=1e-5)




def make_clip_vision(path, seed):
    torch.manual_seed(seed)
    model = CLIPVisionModel(CLIPVisionConfig(**vision_config("quick_gelu"))).eval()
    rescale_(model, seed)
    model.save_pretrained(path)


def make_clip_full(path, seed):
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=vision_config("gelu"), projection_dim=16)
    model = CLIPModel(config).eval()
    rescale_(model, seed)
    model.save_pretrained(path)


def make_llama(path, seed, dtype=torch.float32, max_shard_size=None, **kw):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**kw)).eval()
    rescale_(model, seed)
    model = model.to(dtype)
    if max_shard_size:
        model.save_pretrained(path, max_shard_size=max_shard_size)
    else:
        model.save_pretrained(path)


def vision_hidden_states(path, pixel_values, in_memory=None):
    with open(os.path.join(path, "config.json")) as f:
        model_type = json.load(f)["model_type"]
    if in_memory is not None:
        tower = in_memory.float()
    elif model_type == "clip":
        tower = CLIPModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval().vision_model
    else:
        tower = CLIPVisionModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        out = tower(pixel_values=pixel_values, output_hidden_states=True)
    return torch.stack(out.hidden_states).numpy()


def language_outputs(path, input_ids, attention_mask):
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return torch.stack(out.hidden_states).numpy(), out.logits.numpy()


def write_case(name, make_vision, make_language, vocab, seed):
    case = os.path.join(ROOT, name)
    shutil.rmtree(case, ignore_errors=True)
    os.makedirs(case)
    in_memory = make_vision(os.path.join(case, "vision"))
    make_language(os.path.join(case, "language"))

    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(B, 3, 32, 32, generator=g)
    input_ids = torch.randint(0, vocab, (B, T), generator=g, dtype=torch.int64)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    attention_mask[1, PADDED_LENGTH:] = 0
    input_ids[1, PADDED_LENGTH:] = 0  # pad id

    vision_hs = vision_hidden_states(os.path.join(case, "vision"), pixel_values, in_memory)
    language_hs, logits = language_outputs(os.path.join(case, "language"), input_ids, attention_mask)

    with h5py.File(os.path.join(case, "inputs.h5"), "w") as f:
        f["pixel_values"] = pixel_values.numpy().astype(np.float32)
        f["input_ids"] = input_ids.numpy().astype(np.int32)
        f["attention_mask"] = attention_mask.numpy().astype(np.int32)
    with h5py.File(os.path.join(case, "reference.h5"), "w") as f:
        f["vision/hidden_states"] = vision_hs.astype(np.float32)
        f["language/hidden_states"] = language_hs.astype(np.float32)
        f["language/logits"] = logits.astype(np.float32)
    # The same arrays as safetensors, for the Swift model tests, whose target does not link HDF5.
    save_file({"pixel_values": pixel_values.float().contiguous(), "input_ids": input_ids.to(torch.int32),
               "attention_mask": attention_mask.to(torch.int32)}, os.path.join(case, "inputs.safetensors"))
    save_file({"vision/hidden_states": torch.from_numpy(vision_hs).float().contiguous(),
               "language/hidden_states": torch.from_numpy(language_hs).float().contiguous(),
               "language/logits": torch.from_numpy(logits).float().contiguous()},
              os.path.join(case, "reference.safetensors"))
    print(f"{name}: vision {vision_hs.shape} |h| {np.abs(vision_hs).mean():.3f}, language {language_hs.shape} "
          f"|h| {np.abs(language_hs).mean():.3f}, logits {logits.shape} std {logits.std():.3f}")


def rewrite_config(path, edit):
    file = os.path.join(path, "config.json")
    with open(file) as f:
        config = json.load(f)
    edit(config)
    with open(file, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def main():
    torch.set_grad_enabled(False)
    os.makedirs(ROOT, exist_ok=True)

    # 1. GQA LLaMA (untied lm_head, rope_parameters spelling as transformers 5 writes it) + CLIPVisionModel.
    write_case(
        "llama-gqa",
        lambda p: make_clip_vision(p, seed=1),
        lambda p: make_llama(p, seed=2, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=96, rms_norm_eps=1e-5,
                             rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
                             tie_word_embeddings=False),
        vocab=96, seed=3)

    # 2. Tied embeddings, explicit head_dim 16 != 32/4, + a full CLIPModel with gelu.
    write_case(
        "llama-tied-headdim",
        lambda p: make_clip_full(p, seed=4),
        lambda p: make_llama(p, seed=5, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, head_dim=16, vocab_size=80,
                             rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                             tie_word_embeddings=True),
        vocab=80, seed=6)

    # 3. BF16 weights on both sides; the LLaMA is sharded by transformers and its config is rewritten by hand
    #    to the older spelling (top-level rope_theta, no head_dim); the CLIPVisionModel is in the transformers 4
    #    layout (vision_model.* names, an I64 position_ids buffer). The reference is computed from the
    #    BF16-rounded weights in float32.
    def bf16_language(p):
        make_llama(p, seed=8, dtype=torch.bfloat16, max_shard_size="40KB", hidden_size=32,
                   intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                   vocab_size=64, rms_norm_eps=1e-5,
                   rope_parameters={"rope_type": "default", "rope_theta": 20000.0}, tie_word_embeddings=False)

        def old_spelling(c):
            c["rope_theta"] = c.pop("rope_parameters")["rope_theta"]
            c.pop("head_dim", None)
        rewrite_config(p, old_spelling)

    def bf16_vision(p):
        torch.manual_seed(7)
        model = CLIPVisionModel(CLIPVisionConfig(**vision_config("quick_gelu"))).eval()
        rescale_(model, 7)
        model = model.to(torch.bfloat16)
        model.save_pretrained(p)
        # transformers 5 saves a CLIPVisionModel without a prefix; rewrite it in the transformers 4 layout
        # (vision_model.* names, plus the int64 position_ids buffer that checkpoints before 4.31 carried).
        file = os.path.join(p, "model.safetensors")
        tensors = {"vision_model." + k: v for k, v in load_file(file).items()}
        tensors["vision_model.embeddings.position_ids"] = torch.arange(17, dtype=torch.int64)[None]
        save_file(tensors, file, metadata={"format": "pt"})
        model.set_attn_implementation("eager")
        return model.float()  # BF16-rounded weights, computed in float32

    write_case("bf16", bf16_vision, bf16_language, vocab=64, seed=9)


if __name__ == "__main__":
    main()
