#!/usr/bin/env python3
"""Writes the small safetensors files under Tests/Fixtures/safetensors/ that the Swift reader is tested on.

Needs: pip install torch safetensors. Run from the repository root:
    python3 Scripts/make_safetensors_fixtures.py
The files are committed; CI never runs this. Every value is reproducible (fixed seed).

- mixed.safetensors: F32, F16, BF16 and I64 tensors plus __metadata__. Each 16-bit tensor `x` has an F32
  twin `x.f32` holding exactly the same values (every F16/BF16 value is a Float32), so the Swift side can
  check its conversion bit for bit. F16 values include subnormals, signed zeros, infinities and values
  past the F16 range rounded to inf; `ids` is an I64 tensor the reader must tolerate until it is taken.
- sharded/: the same kind of tensors split over two shards with a model.safetensors.index.json, as
  transformers writes them.
"""
import json
import os

import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "safetensors")


def main():
    os.makedirs(os.path.join(ROOT, "sharded"), exist_ok=True)
    g = torch.Generator().manual_seed(1234)

    f32 = torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1.0
    specials = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 1e5, -1e5, float("inf"), float("-inf"),
                             6.1e-5, 5.96e-8, 3e-6, -4e-7, 1e-9], dtype=torch.float32)
    half = torch.cat([specials, torch.randn(242, generator=g) * 30]).to(torch.float16).reshape(16, 16)
    bspecials = torch.tensor([0.0, -0.0, 1.0, 3e38, -3e38, float("inf"), 1e-40, -1e-39], dtype=torch.float32)
    bf = torch.cat([bspecials, torch.randn(92, generator=g) * 1e3]).to(torch.bfloat16).reshape(4, 25)
    tensors = {
        "weight.f32": f32,
        "half": half, "half.f32": half.float(),
        "bf": bf, "bf.f32": bf.float(),
        "ids": torch.arange(3, dtype=torch.int64),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "scalar": torch.tensor(7.25, dtype=torch.float32),
    }
    save_file(tensors, os.path.join(ROOT, "mixed.safetensors"), metadata={"format": "pt", "note": "fixture"})

    shard1 = {"layer.0.weight": torch.randn(3, 4, generator=g), "layer.0.bias": torch.randn(3, generator=g)}
    shard2 = {"layer.1.weight": torch.randn(2, 3, generator=g).to(torch.float16),
              "layer.1.bias": torch.randn(2, generator=g).to(torch.bfloat16)}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for name, shard in zip(names, [shard1, shard2]):
        save_file(shard, os.path.join(ROOT, "sharded", name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    # The values as F32, for the test to compare against.
    save_file({k: v.float() for k, v in {**shard1, **shard2}.items()}, os.path.join(ROOT, "sharded-expected.safetensors"))
    with open(os.path.join(ROOT, "sharded", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)


if __name__ == "__main__":
    main()
