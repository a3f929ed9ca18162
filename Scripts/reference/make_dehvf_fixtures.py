#!/usr/bin/env python3
"""Writes Tests/Fixtures/dehvf: tiny backbones, a small dataset, one checkpoint per fusion mode with
perturbed parameters, and the PyTorch reference's loss and gradients for them (dehvf_reference.py).

    pip install torch transformers safetensors h5py
    Scripts/reference/make_dehvf_fixtures.py [--out Tests/Fixtures/dehvf]

The Swift tests (`inspect gradients` against `reference-<mode>.h5`) read these; CI never runs this script.
Everything is seeded, so a rerun with the same library versions rewrites the same numbers.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fingerprint  # noqa: E402  (the Swift fingerprint, reproduced)


def make_backbones(out):
    torch.manual_seed(0)
    vcfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=2,
                            image_size=16, patch_size=4, hidden_act="quick_gelu", projection_dim=16)
    vision = CLIPVisionModel(vcfg)
    lcfg = LlamaConfig(hidden_size=16, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=32, rms_norm_eps=1e-6, tie_word_embeddings=False,
                       max_position_embeddings=64)
    llm = LlamaForCausalLM(lcfg)
    with torch.no_grad():  # HF's init is tiny: scale so activations are O(1) and a wrong port cannot pass
        for name, p in llm.named_parameters():
            if p.dim() == 2:
                p.mul_(10)
    vision.save_pretrained(os.path.join(out, "vision"), safe_serialization=True)
    llm.save_pretrained(os.path.join(out, "language"), safe_serialization=True)
    return vcfg, lcfg


def make_dataset(path, n=5, t=10, image=16, vocab=32):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 3, image, image), dtype=np.uint8)
    has_image = np.array([1, 1, 0, 1, 1][:n], np.uint8)
    lengths = np.array([10, 7, 9, 8, 10][:n], np.int32)
    ids = np.zeros((n, t), np.int32)
    labels = np.full((n, t), -100, np.int32)
    for i in range(n):
        ids[i, : lengths[i]] = rng.integers(3, vocab, size=lengths[i])
        ids[i, 0] = 1
        first = lengths[i] - 1 - (i % 2)          # one or two answer tokens at the end
        labels[i, first: lengths[i]] = ids[i, first: lengths[i]]
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "dehvf-dataset"
        f.attrs["version"] = np.int64(1)
        f.attrs["task"] = "multiple-choice"
        f.attrs["pad_id"] = np.int64(0)
        f.attrs["image_mean"] = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
        f.attrs["image_std"] = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
        f.create_dataset("images", data=images, chunks=(1, 3, image, image))
        f["has_image"] = has_image
        f["input_ids"] = ids
        f["lengths"] = lengths
        f["labels"] = labels
        f["answer"] = np.zeros(n, np.int32)
        f["num_choices"] = np.full(n, 4, np.int32)
        f["answer_position"] = (lengths - 2).astype(np.int32)
        f["choice_token_ids"] = np.array([4, 5, 6, 7], np.int32)


def param_shapes(mode, lv, llm_layers, d, dv, r, m, s):
    shapes = {}
    if mode == "dehvf":
        shapes["router.weight"] = (llm_layers, s, d)
        shapes["router.bias"] = (llm_layers, s)
    shapes.update({"projector.fc1.weight": (r, dv), "projector.fc1.bias": (r,),
                   "projector.fc2.weight": (d, r), "projector.fc2.bias": (d,)})
    if mode != "concat":
        shapes["prompt.key_pos"] = (m, d)
        shapes["prompt.value_pos"] = (m, d)
    return shapes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "Tests", "Fixtures", "dehvf"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    vcfg, lcfg = make_backbones(out)
    make_dataset(os.path.join(out, "data.h5"))
    backbone = fingerprint.pair(os.path.join(out, "vision"), os.path.join(out, "language"))
    modes = {"dehvf": dict(vision_layers=[1, 2, 4], visual_tokens=4), "memvp": dict(visual_tokens=0),
             "concat": dict(visual_tokens=4)}
    rng = np.random.default_rng(2)
    for mode, extra in modes.items():
        m = extra["visual_tokens"] or (vcfg.image_size // vcfg.patch_size) ** 2
        s = len(extra.get("vision_layers", [])) if mode == "dehvf" else 1
        job = {
            "model": {"vision": "vision", "language": "language", "fusion": mode, "projector_rank": 8,
                      "visual_tokens": extra["visual_tokens"], "feature_scale": 0.5, "injection_scale": 2.0,
                      "dropout": 0.1, **({"vision_layers": extra["vision_layers"]} if "vision_layers" in extra else {})},
            "data": {"train": "data.h5", "global_batch": 4, "micro_batch": 2, "seed": 0},
        }
        with open(os.path.join(out, f"job-{mode}.yaml"), "w") as f:
            f.write(f"# Job for the {mode} gradient fixture (Scripts/reference/make_dehvf_fixtures.py).\n")
            f.write(json.dumps(job, indent=2) + "\n")   # JSON is YAML
        shapes = param_shapes(mode, vcfg.num_hidden_layers, lcfg.num_hidden_layers, lcfg.hidden_size,
                              vcfg.hidden_size, 8, m, s)
        with h5py.File(os.path.join(out, f"checkpoint-{mode}.h5"), "w") as f:
            f.attrs["format"] = "dehvf-checkpoint"
            f.attrs["version"] = np.int64(1)
            f.attrs["step"] = np.int64(0)
            f.attrs["epoch"] = np.int64(0)
            f.attrs["seed"] = np.int64(0)
            f.attrs["config"] = json.dumps(job, sort_keys=True)
            f.attrs["backbone"] = backbone
            for group in ("params", "optimizer/exp_avg", "optimizer/exp_avg_sq"):
                g = f.create_group(group)
                for name, shape in shapes.items():
                    value = (rng.normal(0, 0.5, size=shape) if group == "params" else np.zeros(shape))
                    g.create_dataset(name, data=value.astype(np.float32), fletcher32=True)
            f.create_dataset("history/loss", data=np.zeros(0, np.float32))
        subprocess.run([sys.executable, os.path.join(HERE, "dehvf_reference.py"),
                        "--checkpoint", os.path.join(out, f"checkpoint-{mode}.h5"),
                        "--data", os.path.join(out, "data.h5"), "--samples", "0:5",
                        "--out", os.path.join(out, f"reference-{mode}.h5")], check=True)


if __name__ == "__main__":
    main()
