#!/usr/bin/env python3
"""PyTorch eager baseline for `bench step` and `bench infer` (same shapes, same thread count, same JSON).

    Scripts/bench_pytorch.py [--threads 2] [--runs 5] [--json out.json] [--suites step,infer]

Built on transformers' CLIPVisionModel and LlamaForCausalLM (eager attention) with the DEHVF fuser
attached by replacing each decoder layer's mlp.forward, exactly as Scripts/reference/dehvf_reference.py
does (DESIGN.md §4). As in the Swift bench: features are cached (the ViT's cost is reported per image on
its own), the lm_head runs on the label rows only (training) or on the answer row (scoring), a step is
forward + backward + torch.optim.AdamW (one micro-batch, so there is no cross-worker sum to do), and every
round measures a 2048³ matmul ceiling next to the figures. A tool for people, not a product dependency.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

# On a shared machine OpenMP's default spin-wait makes PyTorch 3-5x slower whenever another process
# holds a core (measured here: LLaMA forward 1.6-3.0 s active vs 0.42 s passive). Passive waiting is the
# fair setting for the comparison; export OMP_WAIT_POLICY=ACTIVE to measure the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
from dehvf_reference import default_vision_layers  # noqa: E402

SHAPES = {"bench": dict(image=64, text=96), "paper-shape": dict(image=128, text=128)}
B, LABELS, RANK = 8, 16, 128
MODES = ["dehvf", "memvp", "concat"]


def build(shape):
    vcfg = CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=8,
                            image_size=shape["image"], patch_size=8)
    vcfg._attn_implementation = "eager"
    lcfg = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=8, vocab_size=4096, max_position_embeddings=2048)
    lcfg._attn_implementation = "eager"
    torch.manual_seed(0)
    vision = CLIPVisionModel(vcfg).eval()
    llm = LlamaForCausalLM(lcfg).eval()
    for p in list(vision.parameters()) + list(llm.parameters()):
        p.requires_grad_(False)
    return vision, llm


def candidate_features(vision, pixels, layers):
    """F_j = post_layernorm(hidden_states[j][:, 1:]) for every patch: [B, S, M, Dv]."""
    with torch.no_grad():
        out = vision(pixel_values=pixels, output_hidden_states=True)
        post = getattr(vision, "vision_model", vision).post_layernorm
        return torch.stack([post(out.hidden_states[j][:, 1:]) for j in layers], 1)


class Fuser:
    """The trainable part and its injection hooks (the reference's logic, parameters held here)."""

    def __init__(self, mode, llm, s, dv, m):
        self.mode, self.llm = mode, llm
        d, L = llm.config.hidden_size, llm.config.num_hidden_layers
        g = torch.Generator().manual_seed(4)
        u = lambda shape, fan: (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(fan)
        self.params = {"projector.fc1.weight": u((RANK, dv), dv), "projector.fc1.bias": torch.zeros(RANK),
                       "projector.fc2.weight": u((d, RANK), RANK), "projector.fc2.bias": torch.zeros(d)}
        if mode == "dehvf":
            self.params["router.weight"] = (torch.rand((L, s, d), generator=g) * 2 - 1) * 0.01
            self.params["router.bias"] = torch.zeros(L, s)
        if mode != "concat":
            self.params["prompt.key_pos"] = torch.randn((m, d), generator=g) * 0.02
            self.params["prompt.value_pos"] = torch.zeros(m, d)
        for p in self.params.values():
            p.requires_grad_(True)
        self.state = None
        if mode != "concat":
            for i, layer in enumerate(llm.model.layers):
                layer.mlp.forward = self.hook(i, layer.mlp)

    def projector(self, pre):
        P = self.params
        return F.silu(pre) @ P["projector.fc2.weight"].T + P["projector.fc2.bias"]

    def hook(self, index, mlp):
        def forward(x):
            P, st = self.params, self.state
            out = mlp.__class__.forward(mlp, x)
            if self.mode == "dehvf":
                u = (x * st["prompt"][..., None]).sum(1) / st["count"][:, None]
                alpha = torch.softmax(u @ P["router.weight"][index].T + P["router.bias"][index], -1)
                pre = torch.einsum("bs,bsmr->bmr", alpha, st["fc1"]) + P["projector.fc1.bias"]
            else:
                pre = st["fc1"][:, 0] + P["projector.fc1.bias"]
            z = 0.01 * self.projector(pre)
            k, v = z + P["prompt.key_pos"], z + P["prompt.value_pos"]
            scores = F.silu(torch.einsum("btd,bmd->btm", x, k))
            if st["train"]:
                scores = F.dropout(scores, 0.1, training=True)
            return out + 0.1 * torch.einsum("btm,bmd->btd", scores, v)
        return forward

    def hidden(self, feats, ids, labels, train):
        """Final hidden states [B, T', d] and the row offset of the text (M for concat, else 0)."""
        P = self.params
        fc1 = torch.einsum("bsmv,rv->bsmr", feats, P["projector.fc1.weight"])
        bsz, t = ids.shape
        mask = torch.ones(bsz, t, dtype=torch.long)
        if self.mode == "concat":
            vis = self.projector(fc1[:, 0] + P["projector.fc1.bias"])
            m = vis.shape[1]
            embeds = torch.cat([vis, self.llm.model.embed_tokens(ids)], 1)
            attn = torch.ones(bsz, m + t, dtype=torch.long)
            return self.llm.model(inputs_embeds=embeds, attention_mask=attn).last_hidden_state, m
        labelled = labels != -100
        first = torch.where(labelled.any(1), labelled.float().argmax(1), torch.full((bsz,), t))
        prompt = (torch.arange(t)[None, :] < first[:, None]) & (mask == 1)
        self.state = dict(fc1=fc1, prompt=prompt, count=prompt.sum(1).clamp(min=1).float(), train=train)
        return self.llm.model(input_ids=ids, attention_mask=mask).last_hidden_state, 0


def flops(mode, shape, s):
    """The Swift bench's FLOP count (Sources/Bench/FlopCount.swift): GEMM work only, multiply-add = 2."""
    d, L, H, hd, f, V, dv, r = 512, 8, 8, 64, 1376, 4096, 256, RANK
    m, t = (shape["image"] // 8) ** 2, shape["text"]
    tp = t + (m if mode == "concat" else 0)
    lin = 2 * B * tp * (4 * d * d + 3 * d * f)
    att = B * H * tp * tp * hd
    if mode == "concat":
        ff, fb = B * (2 * m * dv * r + 2 * m * r * d), B * (2 * m * dv * r + 4 * m * r * d)
    else:
        ff = B * (2 * s * m * dv * r + L * (2 * m * r * d + 4 * t * m * d))
        fb = B * (2 * s * m * dv * r + L * (4 * m * r * d + 8 * t * m * d))
    step = L * (2 * lin + 12 * att) + 2 * (2 * B * LABELS * d * V) + ff + fb
    infer = L * (lin + 4 * att) + 2 * B * d * V + ff
    return step, infer


def ceiling():
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    s = time.perf_counter()
    torch.mm(a, b.T)
    return 2 * 2048 ** 3 / (time.perf_counter() - s) / 1e9


def stats(xs):
    return dict(median=statistics.median(xs), min=min(xs), max=max(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--configs", default="bench,paper-shape")
    ap.add_argument("--suites", default="step,infer")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}; median [min, max] of {args.runs} runs")
    figures = []

    def add(suite, config, mode, name, unit, xs):
        f = dict(suite=suite, config=config, mode=mode, name=name, unit=unit, **stats(xs))
        figures.append(f)
        print(f"  {config + '/' + mode:22} {name:30} {f['median']:12.4g} {unit:9} [{f['min']:.4g}, {f['max']:.4g}]")

    for cname in args.configs.split(","):
        shape = SHAPES[cname]
        vision, llm = build(shape)
        t = shape["text"]
        g = torch.Generator().manual_seed(3)
        pixels = torch.rand((B, 3, shape["image"], shape["image"]), generator=g) * 3 - 1.5
        ids = torch.randint(0, 4096, (B, t), generator=g)
        labels = torch.full((B, t), -100)
        labels[:, t - LABELS:] = ids[:, t - LABELS:]
        lv = vision.config.num_hidden_layers
        all_layers = default_vision_layers(lv)
        vit = []
        for i in range(args.warmup + args.runs):
            s = time.perf_counter()
            feats_all = candidate_features(vision, pixels, all_layers)
            if i >= args.warmup:
                vit.append((time.perf_counter() - s) / B)
        print(f"\n== pytorch {cname}")
        add("step", cname, "vit", "ViT forward per image (once)", "ms", [x * 1e3 for x in vit])
        add("step", cname, "vit", "ViT images/s", "images/s", [1 / x for x in vit])
        fusers = {}
        for mode in MODES:
            feats = feats_all if mode == "dehvf" else feats_all[:, -1:]
            fusers[mode] = (Fuser(mode, llm, feats.shape[1], feats.shape[3], feats.shape[2]), feats)
        # Each mode's hooks replace the previous ones; re-install before use.
        def use(mode):
            fu, feats = fusers[mode]
            if mode != "concat":
                for i, layer in enumerate(llm.model.layers):
                    layer.mlp.forward = fu.hook(i, layer.mlp)
            else:
                for layer in llm.model.layers:
                    layer.mlp.__dict__.pop("forward", None)
            return fu, feats

        opts = {m: torch.optim.AdamW(list(fusers[m][0].params.values()), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                                     weight_decay=0.02) for m in MODES}
        lm_head = llm.lm_head

        def step(mode):
            fu, feats = use(mode)
            s = time.perf_counter()
            opts[mode].zero_grad(set_to_none=True)
            h, off = fu.hidden(feats, ids, labels, train=True)
            rows_b, rows_t = torch.nonzero(labels[:, 1:] != -100, as_tuple=True)
            logits = lm_head(h[rows_b, off + rows_t])
            loss = F.cross_entropy(logits, labels[:, 1:][rows_b, rows_t], reduction="sum")
            loss.backward()
            opts[mode].step()
            return time.perf_counter() - s

        def infer(mode):
            fu, feats = use(mode)
            s = time.perf_counter()
            with torch.no_grad():
                h, off = fu.hidden(feats, ids, labels, train=False)
                logits = lm_head(h[:, off + t - LABELS - 1])
                _ = logits[:, [10, 11, 12, 13]]
            return time.perf_counter() - s

        for suite, fn in (("step", step), ("infer", infer)):
            if suite not in args.suites.split(","):
                continue
            for m in MODES:
                for _ in range(args.warmup):
                    fn(m)
            ceil, times = [], {m: [] for m in MODES}
            for _ in range(args.runs):
                ceil.append(ceiling())
                for m in MODES:
                    times[m].append(fn(m))
            add(suite, cname, "", "torch.mm 2048 ceiling", "GFLOP/s", ceil)
            for m in MODES:
                if suite == "step":
                    add(suite, cname, m, "step time", "ms", [x * 1e3 for x in times[m]])
                add(suite, cname, m, "samples/s", "samples/s", [B / x for x in times[m]])
                work = flops(m, shape, fusers[m][1].shape[1])[0 if suite == "step" else 1]
                add(suite, cname, m, "fraction of gemm ceiling", "ratio",
                    [work / x / 1e9 / c for x, c in zip(times[m], ceil)])
            add(suite, cname, "dehvf/concat", "step time ratio" if suite == "step" else "time ratio", "ratio",
                [a / b for a, b in zip(times["dehvf"], times["concat"])])

    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
        print(f"\nwrote {len(figures)} figures to {args.json}")


if __name__ == "__main__":
    main()
