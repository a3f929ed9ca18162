#!/usr/bin/env python3
"""Checks whole training steps of the Swift trainer against PyTorch: for each step k asked for, takes the
checkpoint after k steps (parameters and AdamW moments), rebuilds step k's global batch with the sampler
of DESIGN.md §5 (Sources/Shard/Sampler.swift), computes the loss and gradients with dehvf_reference.py's
model code, applies one torch.optim.AdamW step with the §4 schedule, and compares with the checkpoint after
k+1 steps. Covers sampler, exact gradient sum, loss normalisation, schedule and AdamW at once.
Measured on the demo (steps 291, 750, 1200): max |param diff| <= 1.6e-7 for updates of 2e-3..7e-3.

    coordinator train --config clusters/local.yaml --set cluster.launcher=inprocess --set model.dropout=0 \\
        --set checkpoint.every=1 --set checkpoint.keep=1000 --set checkpoint.dir=runs/steps   # stop it early
    Scripts/reference/check_train_steps.py --data data/demo --checkpoints runs/steps 291 750 1200   # kept ones

Dropout must be off in that run (its masks come from the Swift counter generator). Needs torch,
transformers and h5py. Prints, per tensor, the largest parameter difference next to the update's size.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np
import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dehvf_reference import candidate_features, default_vision_layers, dehvf_logits, load_vision, token_loss  # noqa: E402
from train_demo_reference import learning_rate, load_split  # noqa: E402

M64 = (1 << 64) - 1


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def permutation(n, seed, epoch):
    state = mix((mix(seed & M64) + epoch) & M64)
    p = list(range(n))
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & M64
        j = mix(state) % (i + 1)
        p[i], p[j] = p[j], p[i]
    return p


def read(directory, step):
    with h5py.File(os.path.join(directory, f"step-{step:08d}.h5"), "r") as f:
        group = lambda g: {n: torch.tensor(np.asarray(f[g][n])) for n in f[g]}  # noqa: E731
        return group("params"), group("optimizer/exp_avg"), group("optimizer/exp_avg_sq"), json.loads(f.attrs["config"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the run's demo data directory")
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("steps", type=int, nargs="+")
    args = ap.parse_args()
    vision = load_vision(os.path.join(args.data, "vision"))
    llm = LlamaForCausalLM.from_pretrained(os.path.join(args.data, "language"), attn_implementation="eager").eval()
    for p in list(vision.parameters()) + list(llm.parameters()):
        p.requires_grad_(False)
    train = load_split(os.path.join(args.data, "train.h5"))
    n = len(train["ids"])
    for k in args.steps:
        params, exp_avg, exp_avg_sq, job = read(args.checkpoints, k)
        after, _, _, _ = read(args.checkpoints, k + 1)
        m, d, o = job["model"], job["data"], job["optim"]
        assert m["dropout"] == 0, "run the trainer with model.dropout=0"
        lv = vision.config.num_hidden_layers
        layers = (m.get("vision_layers") or default_vision_layers(lv)) if m["fusion"] == "dehvf" else [lv - 1]
        batch, per_epoch = d["global_batch"], n // d["global_batch"]
        order = permutation(n, d["seed"], k // per_epoch)
        idx = torch.tensor(order[(k % per_epoch) * batch:(k % per_epoch + 1) * batch])
        feats = candidate_features(vision, train["pixels"][idx], layers, m["visual_tokens"]).detach()
        ps = {name: t.clone().requires_grad_(True) for name, t in params.items()}
        logits, labels = dehvf_logits(llm, ps, feats, train["ids"][idx], train["mask"][idx], train["labels"][idx],
                                      train["has_image"][idx], m["fusion"], m["feature_scale"], m["injection_scale"])
        loss, _ = token_loss(logits, labels)
        loss.backward()
        groups = [{"params": [p for p in ps.values() if p.dim() >= 2], "weight_decay": o["weight_decay"]},
                  {"params": [p for p in ps.values() if p.dim() < 2], "weight_decay": 0.0}]
        total = o.get("steps") or o["epochs"] * per_epoch
        opt = torch.optim.AdamW(groups, lr=learning_rate(k, o["lr"], o["warmup_steps"], total), betas=tuple(o["betas"]),
                                eps=o["eps"], foreach=False)
        for name, p in ps.items():
            opt.state[p] = {"step": torch.tensor(float(k)), "exp_avg": exp_avg[name].clone(),
                            "exp_avg_sq": exp_avg_sq[name].clone()}
        opt.step()
        print(f"step {k}: loss {loss.item():.5f}")
        for name, p in ps.items():
            diff = (p.detach() - after[name]).abs().max().item()
            update = (after[name] - params[name]).abs().max().item()
            print(f"    {name:22s} max |param diff| {diff:.2e}   max |update| {update:.2e}")


if __name__ == "__main__":
    main()
