#!/usr/bin/env python3
"""Trains the demo with PyTorch (torch.optim.AdamW, DESIGN.md §4 schedule) on the model code of
dehvf_reference.py, to tell whether a demo data directory can reach the target at all, independently of
the Swift trainer:

    .build/release/coordinator demo-data --out data/demo
    Scripts/reference/train_demo_reference.py --data data/demo [--fusion dehvf] [--steps 3000]

Reads `vision/`, `language/` (Hugging Face directories), `train.h5` and `test.h5` of the directory and
prints held-out accuracy, overall and per question type (colour / shape). Hyper-parameters default to
clusters/local.yaml's. `--fresh-backbone SEED` instead draws new backbones of the same shapes with
transformers' own init (LLaMA weight matrices x10, as the issue's reference did) and, with
`--save-backbone DIR`, writes them so the Swift trainer can use them too.
Needs torch, transformers and h5py (the product itself never does).
"""
import argparse
import json
import math
import os
import sys
import time

import h5py
import numpy as np
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dehvf_reference import candidate_features, default_vision_layers, dehvf_logits, load_vision, token_loss  # noqa: E402

COLOR_TOKEN = 4  # DemoTask.vocabulary.firstIndex(of: "color"): position 2 of a colour question


def load_split(path):
    with h5py.File(path, "r") as f:
        mean = np.asarray(f.attrs["image_mean"], np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(f.attrs["image_std"], np.float32).reshape(1, 3, 1, 1)
        images = np.asarray(f["images"], np.float32) / 255.0
        ids = torch.tensor(np.asarray(f["input_ids"]), dtype=torch.long)
        lengths = torch.tensor(np.asarray(f["lengths"]), dtype=torch.long)
        return dict(pixels=torch.tensor((images - mean) / std), has_image=torch.tensor(np.asarray(f["has_image"]) != 0),
                    ids=ids, mask=(torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long(),
                    labels=torch.tensor(np.asarray(f["labels"]), dtype=torch.long),
                    answer=torch.tensor(np.asarray(f["answer"]), dtype=torch.long),
                    position=torch.tensor(np.asarray(f["answer_position"]), dtype=torch.long),
                    choices=torch.tensor(np.asarray(f["choice_token_ids"]), dtype=torch.long))


def fresh_backbones(data_dir, seed, vision_intermediate=None, language_intermediate=None):
    """New backbones shaped like the demo's (or with other MLP widths), with transformers' init (LLaMA
    weight matrices x10)."""
    old_v = CLIPVisionModel.from_pretrained(os.path.join(data_dir, "vision")).config
    old_l = LlamaForCausalLM.from_pretrained(os.path.join(data_dir, "language")).config
    torch.manual_seed(seed)
    vcfg = CLIPVisionConfig(hidden_size=old_v.hidden_size,
                            intermediate_size=vision_intermediate or old_v.intermediate_size,
                            num_hidden_layers=old_v.num_hidden_layers, num_attention_heads=old_v.num_attention_heads,
                            image_size=old_v.image_size, patch_size=old_v.patch_size, hidden_act=old_v.hidden_act)
    vision = CLIPVisionModel(vcfg).eval()
    lcfg = LlamaConfig(hidden_size=old_l.hidden_size,
                       intermediate_size=language_intermediate or old_l.intermediate_size,
                       num_hidden_layers=old_l.num_hidden_layers, num_attention_heads=old_l.num_attention_heads,
                       num_key_value_heads=old_l.num_key_value_heads, vocab_size=old_l.vocab_size,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    llm = LlamaForCausalLM(lcfg).eval()
    with torch.no_grad():
        for p in llm.parameters():
            if p.dim() == 2:
                p.mul_(10)
    return vision, llm


def initial_params(fusion, layers_l, s, d, dv, r, m, gen):
    """DESIGN.md §4 initialisation (the distributions, not the Swift draws)."""
    def uniform(shape, fan_in):
        b = 1 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=gen) * 2 - 1) * b
    p = {}
    if fusion == "dehvf":
        p["router.weight"] = torch.zeros(layers_l, s, d)
        bias = torch.zeros(layers_l, s)
        if s > 1 and layers_l > 1:
            for li in range(layers_l):
                for j in range(s):
                    bias[li, j] = -4 * abs(j / (s - 1) - li / (layers_l - 1))
        p["router.bias"] = bias
    p["projector.fc1.weight"] = uniform((r, dv), dv)
    p["projector.fc1.bias"] = torch.zeros(r)
    p["projector.fc2.weight"] = uniform((d, r), r)
    p["projector.fc2.bias"] = torch.zeros(d)
    if fusion != "concat":
        p["prompt.key_pos"] = torch.randn((m, d), generator=gen) * 0.02
        p["prompt.value_pos"] = torch.zeros(m, d)
    return {k: v.requires_grad_(True) for k, v in p.items()}


def learning_rate(step, base, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1), 1)))


def evaluate(llm, params, split, feats, args, batch=100):
    right = torch.zeros(0, dtype=torch.bool)
    with torch.no_grad():
        for a in range(0, len(split["ids"]), batch):
            sl = slice(a, a + batch)
            logits, _ = dehvf_logits(llm, params, feats[sl], split["ids"][sl], split["mask"][sl], split["labels"][sl],
                                     split["has_image"][sl], args.fusion, args.feature_scale, args.injection_scale)
            shift = logits.shape[1] - split["ids"].shape[1]
            rows = logits[torch.arange(logits.shape[0]), shift + split["position"][sl]]
            right = torch.cat([right, rows[:, split["choices"]].argmax(1) == split["answer"][sl]])
    color = split["ids"][:, 2] == COLOR_TOKEN
    return right.float().mean().item(), right[color].float().mean().item(), right[~color].float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a `coordinator demo-data` directory")
    ap.add_argument("--fusion", default="dehvf", choices=["dehvf", "memvp", "concat"])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--weight-decay", type=float, default=0.02)
    ap.add_argument("--feature-scale", type=float, default=0.1)
    ap.add_argument("--injection-scale", type=float, default=3.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="parameter init and data order")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fresh-backbone", type=int, help="draw new backbones with transformers' init from this seed")
    ap.add_argument("--save-backbone", help="with --fresh-backbone: write vision/ and language/ here")
    ap.add_argument("--vision-intermediate", type=int, help="with --fresh-backbone: the ViT's MLP width")
    ap.add_argument("--language-intermediate", type=int, help="with --fresh-backbone: the LLaMA's MLP width")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--checkpoint", help="no training: score this Swift checkpoint's parameters (its own fusion "
                    "and scales) on test.h5, per question type")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.fresh_backbone is not None:
        vision, llm = fresh_backbones(args.data, args.fresh_backbone, args.vision_intermediate,
                                      args.language_intermediate)
        if args.save_backbone:
            vision.save_pretrained(os.path.join(args.save_backbone, "vision"), safe_serialization=True)
            llm.save_pretrained(os.path.join(args.save_backbone, "language"), safe_serialization=True)
    else:
        vision = load_vision(os.path.join(args.data, "vision"))
        llm = LlamaForCausalLM.from_pretrained(os.path.join(args.data, "language"), attn_implementation="eager",
                                               torch_dtype=torch.float32).eval()
    llm.config._attn_implementation = "eager"
    for p in list(vision.parameters()) + list(llm.parameters()):
        p.requires_grad_(False)

    if args.checkpoint:
        with h5py.File(args.checkpoint, "r") as f:
            model = json.loads(f.attrs["config"])["model"]
        args.fusion, args.feature_scale = model["fusion"], model["feature_scale"]
        args.injection_scale = model["injection_scale"]
    lv = vision.config.num_hidden_layers
    layers = default_vision_layers(lv) if args.fusion == "dehvf" else [lv - 1]
    train, test = load_split(os.path.join(args.data, "train.h5")), load_split(os.path.join(args.data, "test.h5"))
    f_train = candidate_features(vision, train["pixels"], layers, 0)
    f_test = candidate_features(vision, test["pixels"], layers, 0)
    if args.checkpoint:
        with h5py.File(args.checkpoint, "r") as f:
            params = {name: torch.tensor(np.asarray(f["params"][name])) for name in f["params"]}
        acc, color, shape = evaluate(llm, params, test, f_test, args)
        print(f"{args.checkpoint}: test accuracy {acc:.3f} (colour {color:.3f}, shape {shape:.3f})")
        return
    gen = torch.Generator().manual_seed(args.seed)
    params = initial_params(args.fusion, llm.config.num_hidden_layers, len(layers), llm.config.hidden_size,
                            vision.config.hidden_size, args.rank, f_train.shape[2], gen)
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    n = len(train["ids"])
    per_epoch = n // args.batch
    start = time.time()
    order, recent = None, []
    for step in range(args.steps):
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=gen)
        idx = order[(step % per_epoch) * args.batch:(step % per_epoch + 1) * args.batch]
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, args.lr, args.warmup, args.steps)
        logits, labels = dehvf_logits(llm, params, f_train[idx], train["ids"][idx], train["mask"][idx],
                                      train["labels"][idx], train["has_image"][idx], args.fusion,
                                      args.feature_scale, args.injection_scale, dropout=args.dropout)
        loss, _ = token_loss(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        recent.append(loss.item())
        if (step + 1) % 250 == 0 or step == args.steps - 1:
            line = f"step {step + 1}/{args.steps} mean loss {np.mean(recent):.4f}"
            recent = []
            if args.eval_every and ((step + 1) % args.eval_every == 0 or step == args.steps - 1):
                line += " test %.3f (colour %.3f, shape %.3f)" % evaluate(llm, params, test, f_test, args)
            print(line, f"{time.time() - start:.0f} s", flush=True)
    acc, color, shape = evaluate(llm, params, test, f_test, args)
    print(f"{args.fusion}: test accuracy {acc:.3f} (colour {color:.3f}, shape {shape:.3f}) on {len(test['ids'])} "
          f"samples after {args.steps} steps in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
