#!/usr/bin/env python3
"""Writes Tests/Fixtures/adamw/adamw.safetensors: torch.optim.AdamW (single-tensor path) with the DESIGN.md §4
schedule (linear warm-up, then half-cycle cosine, through torch's LambdaLR) and weight decay on rank >= 2
tensors only, run for every step of a short job on fixed tensors of rank 1, 2 and 3.

    pip install torch safetensors
    Scripts/reference/make_adamw_fixture.py [--out Tests/Fixtures/adamw/adamw.safetensors]

The step gradients are stored as sums over LABEL_COUNT label tokens, as a step's exact sum hands them to
TrainState, which divides by the count. `bias` gets tiny gradients so that eps (added after the square
root) moves its update by a visible amount. Tensors:
    init/<name>       the parameters before step 0
    grad/<name>       [STEPS, ...] summed gradient of each step
    params/<name>     [STEPS, ...] the parameters after each step
    exp_avg/<name>, exp_avg_sq/<name>   the moments after the last step
    lr                [STEPS] the learning rate each step used
Keep the constants in step with Tests/ClusterTests/AdamWReferenceTests.swift.
"""
import argparse
import math
import os

import torch
from safetensors.torch import save_file

LR, BETAS, EPS, WEIGHT_DECAY = 0.05, (0.9, 0.95), 1e-8, 0.1
WARMUP, STEPS, LABEL_COUNT = 3, 8, 5
SHAPES = {"weight": (3, 4), "bias": (4,), "table": (2, 2, 3)}
GRAD_SCALE = {"weight": 1.0, "bias": 1e-7, "table": 0.3}


def schedule(step):
    if step < WARMUP:
        return (step + 1) / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP)))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "Tests", "Fixtures", "adamw", "adamw.safetensors"))
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    params = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    grads = {n: torch.randn((STEPS,) + s, generator=gen) * GRAD_SCALE[n] * LABEL_COUNT for n, s in SHAPES.items()}
    out = {f"init/{n}": p.clone() for n, p in params.items()}
    out.update({f"grad/{n}": g.clone() for n, g in grads.items()})
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS, foreach=False, fused=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    after = {n: [] for n in SHAPES}
    lrs = []
    for step in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        for n, p in params.items():
            p.grad = grads[n][step] / LABEL_COUNT
        opt.step()
        sched.step()
        for n, p in params.items():
            after[n].append(p.detach().clone())
    out.update({f"params/{n}": torch.stack(v) for n, v in after.items()})
    for n, p in params.items():
        out[f"exp_avg/{n}"] = opt.state[p]["exp_avg"].clone()
        out[f"exp_avg_sq/{n}"] = opt.state[p]["exp_avg_sq"].clone()
    out["lr"] = torch.tensor(lrs, dtype=torch.float32)
    save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.abspath(args.out))
    print(f"wrote {os.path.abspath(args.out)} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
