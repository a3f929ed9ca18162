#!/usr/bin/env python3
"""Writes the RoPE-scaling golden fixtures under Tests/Fixtures/backbones/rope-*/: a tiny random LlamaForCausalLM
per scaling type, saved as transformers saves it, plus inputs and transformers' own outputs for them.

Needs: pip install torch transformers safetensors (CPU builds are enough). Run from anywhere:
    python3 Scripts/make_rope_fixtures.py
CI never runs this; the outputs are committed (about 250 KB). Everything is seeded, but a different
torch/transformers version may draw different random weights: regenerate all rope-* cases together.
(Scripts/make_fixtures.py writes the other backbone cases and is not rerun by this script.)

Cases (the config spellings are the point as much as the types):
- rope-linear: `rope_scaling: {"type": "linear", "factor": 4.0}` and a top-level `rope_theta`, as transformers 4
  wrote it (the legacy `type` key); max_position_embeddings 64.
- rope-dynamic: `rope_parameters: {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000.0}` as transformers 5
  writes it; max_position_embeddings 16. Two forward calls: `within` (T = 16, largest position 15: the original
  frequencies) and `beyond` (T = 24, row 1's positions offset by 4, so seq_len = max position + 1 = 28 > 16 and
  transformers recomputes the frequencies from 28, not from T).
- rope-llama3: `rope_scaling: {"rope_type": "llama3", ...}` with a top-level `rope_theta`, as Llama 3.1's config.json
  has it; factor 8, low/high_freq_factor 1/4, original_max_position_embeddings 64, max_position_embeddings 128.
  With head_dim 16 and theta 10000 the wavelengths 6.3 / 20 / 63 / 200+ fall in the kept, smoothed (two) and
  divided bands.

Each case is Tests/Fixtures/backbones/<case>/:
- language/: the LlamaForCausalLM directory (F32, untied, 2 layers, width 32, 2 heads of 16 over 1 KV head,
  vocab 32; weights redrawn at O(1) scale as in make_fixtures.py);
- inputs.safetensors: per call, `<call>/input_ids`, `<call>/attention_mask`, `<call>/position_ids`, I32 [2, T]
  (row 1 right-padded with id 0);
- reference.safetensors: per call, `<call>/hidden_states` F32 [L+1, 2, T, 32] and `<call>/logits` F32 [2, T, 32]
  from output_hidden_states=True, eager attention, float32, and `<call>/inv_freq` F32 [8], the rotary embedding's
  inverse frequencies after that call. Each call runs on a freshly loaded model, so dynamic RoPE's cache of the
  longest length seen (`max_seq_len_cached`) starts from max_position_embeddings every time.
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from make_fixtures import ROOT, make_llama, rewrite_config

B = 2
COMMON = dict(hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, vocab_size=32, rms_norm_eps=1e-5, tie_word_embeddings=False)


def call_inputs(g, T, padded, offset):
    input_ids = torch.randint(0, COMMON["vocab_size"], (B, T), generator=g, dtype=torch.int64)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    attention_mask[1, padded:] = 0
    input_ids[1, padded:] = 0
    position_ids = torch.arange(T, dtype=torch.int64).repeat(B, 1)
    position_ids[1] += offset
    return input_ids, attention_mask, position_ids


def write_case(name, seed, rope_type, config, legacy_edit, calls):
    case = os.path.join(ROOT, name)
    shutil.rmtree(case, ignore_errors=True)
    os.makedirs(case)
    language = os.path.join(case, "language")
    make_llama(language, seed=seed, **COMMON, **config)
    if legacy_edit:
        rewrite_config(language, legacy_edit)

    g = torch.Generator().manual_seed(seed + 100)
    inputs, reference = {}, {}
    for call, (T, padded, offset) in calls.items():
        input_ids, attention_mask, position_ids = call_inputs(g, T, padded, offset)
        model = LlamaForCausalLM.from_pretrained(language, dtype=torch.float32, attn_implementation="eager").eval()
        assert model.config.rope_parameters["rope_type"] == rope_type, model.config.rope_parameters
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        output_hidden_states=True)
        inputs[f"{call}/input_ids"] = input_ids.to(torch.int32)
        inputs[f"{call}/attention_mask"] = attention_mask.to(torch.int32)
        inputs[f"{call}/position_ids"] = position_ids.to(torch.int32)
        reference[f"{call}/hidden_states"] = torch.stack(out.hidden_states).float().contiguous()
        reference[f"{call}/logits"] = out.logits.float().contiguous()
        reference[f"{call}/inv_freq"] = model.model.rotary_emb.inv_freq.float().contiguous()
        h = reference[f"{call}/hidden_states"]
        print(f"{name}/{call}: T {T}, max position {int(position_ids.max())}, |h| {h.abs().mean():.3f}, "
              f"logits std {out.logits.std():.3f}, inv_freq {[f'{x:.3g}' for x in reference[f'{call}/inv_freq'].tolist()]}")
    save_file(inputs, os.path.join(case, "inputs.safetensors"))
    save_file(reference, os.path.join(case, "reference.safetensors"))


def legacy_linear(c):
    c["rope_theta"] = c.pop("rope_parameters")["rope_theta"]
    c["rope_scaling"] = {"type": "linear", "factor": 4.0}


def llama31_style(c):
    params = c.pop("rope_parameters")
    c["rope_theta"] = params.pop("rope_theta")
    c["rope_scaling"] = params


def main():
    torch.set_grad_enabled(False)
    write_case("rope-linear", seed=21, rope_type="linear", legacy_edit=legacy_linear,
               config=dict(max_position_embeddings=64,
                           rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0}),
               calls={"within": (16, 11, 0)})
    write_case("rope-dynamic", seed=22, rope_type="dynamic", legacy_edit=None,
               config=dict(max_position_embeddings=16,
                           rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1000.0}),
               calls={"within": (16, 11, 0), "beyond": (24, 19, 4)})
    write_case("rope-llama3", seed=23, rope_type="llama3", legacy_edit=llama31_style,
               config=dict(max_position_embeddings=128,
                           rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
                                            "rope_theta": 10000.0}),
               calls={"within": (24, 17, 0)})


if __name__ == "__main__":
    main()
