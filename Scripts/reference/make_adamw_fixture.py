#!/usr/bin/env python3
"""Writes Tests/Fixtures/adamw/adamw.safetensors: torch.optim.AdamW (single-tensor path) with the DESIGN.md §4
schedule (linear warm-up, then half-cycle cosine, through torch's LambdaLR) and weight decay on rank >= 2
tensors only, run for every step of a short job on fixed tensors of rank 1, 2 and 3. With --clipped it
writes adamw_clipped.safetensors instead: the same job with `optim.max_grad_norm` = MAX_GRAD_NORM, i.e.
torch.nn.utils.clip_grad_norm_ over all three gradients before each step, and step gradients scaled by
CLIP_STEP_SCALE so that some steps are clipped and some are not.

    pip install torch safetensors
    Scripts/reference/make_adamw_fixture.py [--clipped] [--out PATH]

The step gradients are stored as sums over LABEL_COUNT label tokens, as a step's exact sum hands them to
TrainState, which divides by the count. `bias` gets tiny gradients so that eps (added after the square
root) moves its update by a visible amount. Tensors:
    init/<name>       the parameters before step 0
    grad/<name>       [STEPS, ...] summed gradient of each step
    params/<name>     [STEPS, ...] the parameters after each step
    exp_avg/<name>, exp_avg_sq/<name>   the moments after the last step
    lr                [STEPS] the learning rate each step used
    grad_norm         [STEPS] (--clipped only) the global L2 norm clip_grad_norm_ returned, before clipping
Keep the constants in step with Tests/TrainingTests/AdamWReferenceTests.swift.
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
# The clipped case: per-step gradient scales spread the norms (about 1 to 12) around the threshold.
MAX_GRAD_NORM = 3.0
CLIP_STEP_SCALE = [0.4, 2.5, 0.6, 1.8, 0.5, 3.0, 0.9, 1.2]


def schedule(step):
    if step < WARMUP:
        return (step + 1) / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP)))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clipped", action="store_true", help="the optim.max_grad_norm case (adamw_clipped.safetensors)")
    ap.add_argument("--out", help="default: Tests/Fixtures/adamw/adamw.safetensors (adamw_clipped.safetensors with --clipped)")
    args = ap.parse_args()
    name = "adamw_clipped.safetensors" if args.clipped else "adamw.safetensors"
    args.out = args.out or os.path.join(here, "..", "..", "Tests", "Fixtures", "adamw", name)
    out, unclipped = run(args.clipped)
    if args.clipped:
        norms = out["grad_norm"].tolist()
        clipped = sum(n > MAX_GRAD_NORM for n in norms)
        moved = max((out[f"params/{n}"] - unclipped[f"params/{n}"]).abs().max().item() for n in SHAPES)
        print(f"grad norms {[round(n, 3) for n in norms]}: {clipped} of {STEPS} steps clipped at {MAX_GRAD_NORM}; "
              f"clipping moves the parameters by up to {moved:.3g}")
        assert 0 < clipped < STEPS, "the fixture must have clipped and unclipped steps"
    save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.abspath(args.out))
    print(f"wrote {os.path.abspath(args.out)} (torch {torch.__version__})")


def run(clip):
    """The job's tensors; with `clip`, also the same job run without clipping (to show clipping matters)."""
    gen = torch.Generator().manual_seed(0)
    params = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    grads = {n: torch.randn((STEPS,) + s, generator=gen) * GRAD_SCALE[n] * LABEL_COUNT for n, s in SHAPES.items()}
    if clip:
        scale = torch.tensor(CLIP_STEP_SCALE)
        grads = {n: g * scale.view((STEPS,) + (1,) * (g.dim() - 1)) for n, g in grads.items()}
    out = optimize(params, grads, MAX_GRAD_NORM if clip else None)
    return out, (optimize(params, grads, None) if clip else None)


def optimize(init, grads, max_grad_norm):
    params = {n: p.clone() for n, p in init.items()}
    out = {f"init/{n}": p.clone() for n, p in params.items()}
    out.update({f"grad/{n}": g.clone() for n, g in grads.items()})
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS, foreach=False, fused=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    after = {n: [] for n in SHAPES}
    lrs, norms = [], []
    for step in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        for n, p in params.items():
            p.grad = grads[n][step] / LABEL_COUNT
        if max_grad_norm is not None:
            norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), max_grad_norm).item())
        opt.step()
        sched.step()
        for n, p in params.items():
            after[n].append(p.detach().clone())
    out.update({f"params/{n}": torch.stack(v) for n, v in after.items()})
    for n, p in params.items():
        out[f"exp_avg/{n}"] = opt.state[p]["exp_avg"].clone()
        out[f"exp_avg_sq/{n}"] = opt.state[p]["exp_avg_sq"].clone()
    out["lr"] = torch.tensor(lrs, dtype=torch.float32)
    if max_grad_norm is not None:
        out["grad_norm"] = torch.tensor(norms, dtype=torch.float32)
    return out


if __name__ == "__main__":
    main()
