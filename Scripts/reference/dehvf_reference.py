#!/usr/bin/env python3
"""PyTorch reference of DEHVF (DESIGN.md §4), built on transformers' own CLIP and LLaMA modules.

It is written from the design text alone, independently of the Swift code, so the two can check each other:
    Scripts/reference/dehvf_reference.py --checkpoint CK.h5 --data DATA.h5 --samples A:B --out OUT.h5
reads the trainable parameters and the job config from a checkpoint, computes the DESIGN.md loss over
samples A..B-1 with dropout off, and writes `/loss` and `/grads/<name>` exactly as
`coordinator inspect gradients` does. Needs torch, transformers and h5py (the product itself never does).
"""
import argparse
import json
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPVisionModel, LlamaForCausalLM


def default_vision_layers(lv):
    out = []
    for j in (lv // 4, lv // 2, 3 * lv // 4, lv - 1):
        if j not in out:
            out.append(j)
    return out


def resolve(path, base):
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def load_vision(directory):
    with open(os.path.join(directory, "config.json")) as f:
        cfg = json.load(f)
    model = CLIPVisionModel.from_pretrained(directory, attn_implementation="eager", torch_dtype=torch.float32)
    return model.eval()


def candidate_features(vision, pixels, layers, visual_tokens):
    """F_j = post_layernorm(hidden_states[j][:, 1:]), average-pooled to visual_tokens: [B, S, M, Dv]."""
    with torch.no_grad():
        out = vision(pixel_values=pixels, output_hidden_states=True)
    post = getattr(vision, "vision_model", vision).post_layernorm  # transformers 5 flattened it
    feats = []
    for j in layers:
        f = post(out.hidden_states[j][:, 1:])
        b, np_, dv = f.shape
        side = int(round(np_ ** 0.5))
        m = visual_tokens or np_
        mside = int(round(m ** 0.5))
        if mside != side:
            k = side // mside
            f = f.reshape(b, side, side, dv).permute(0, 3, 1, 2)
            f = F.avg_pool2d(f, k).permute(0, 2, 3, 1).reshape(b, m, dv)
        feats.append(f)
    return torch.stack(feats, 1)


def dehvf_logits(llm, params, feats, ids, mask, labels, has_image, fusion, fs, inj, dropout=0.0):
    """The DESIGN.md §4 computation of one batch: (logits [B, T', V], labels [B, T']).

    feats [B, S, M, Dv] are the candidate features; `dropout` > 0 applies inverted dropout to the SiLU
    scores (training). Hooks are installed on `llm`'s MLPs for this call's batch.
    """
    bsz, t = ids.shape
    img = has_image.float()[:, None, None]

    def projector(pre_act):  # fc2(SiLU(pre)) where pre = fc1 output
        return F.silu(pre_act) @ params["projector.fc2.weight"].T + params["projector.fc2.bias"]

    fc1 = torch.einsum("bsmv,rv->bsmr", feats, params["projector.fc1.weight"])  # fc1 without bias, per candidate

    if fusion == "concat":
        for layer in llm.model.layers:
            layer.mlp.__dict__.pop("forward", None)
        vis = projector(fc1[:, 0] + params["projector.fc1.bias"]) * img  # [B,M,d], zero without an image
        m = vis.shape[1]
        embeds = torch.cat([vis, llm.model.embed_tokens(ids)], 1)
        attn = torch.cat([has_image.long()[:, None].expand(bsz, m), mask], 1)
        full_labels = torch.cat([torch.full((bsz, m), -100, dtype=torch.long), labels], 1)
        return llm(inputs_embeds=embeds, attention_mask=attn).logits, full_labels

    # Prompt positions: before the first labelled token, inside the attention mask.
    labelled = labels != -100
    first = torch.where(labelled.any(1), labelled.float().argmax(1), torch.full((bsz,), t))
    prompt = (torch.arange(t)[None, :] < first[:, None]) & (mask == 1)
    count = prompt.sum(1).clamp(min=1).float()

    def make_hook(layer_index, mlp):
        def forward(x):
            out = mlp.__class__.forward(mlp, x)
            if fusion == "dehvf":
                u = (x * prompt[..., None]).sum(1) / count[:, None]                      # [B,d]
                g = u @ params["router.weight"][layer_index].T + params["router.bias"][layer_index]
                alpha = torch.softmax(g, -1)                                               # [B,S]
            else:
                alpha = torch.ones(bsz, 1)
            pre = torch.einsum("bs,bsmr->bmr", alpha, fc1) + params["projector.fc1.bias"]
            z = fs * projector(pre) * img                                                  # [B,M,d]
            k = z + params["prompt.key_pos"]
            v = z + params["prompt.value_pos"]
            scores = F.silu(torch.einsum("btd,bmd->btm", x, k))
            if dropout > 0:
                scores = F.dropout(scores, dropout, training=True)
            return out + inj * torch.einsum("btm,bmd->btd", scores, v)
        return forward

    for i, layer in enumerate(llm.model.layers):
        layer.mlp.forward = make_hook(i, layer.mlp)
    return llm(input_ids=ids, attention_mask=mask).logits, labels


def token_loss(logits, labels):
    """Next-token cross-entropy summed over label tokens and divided by their count: (loss, count)."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    count = (shift_labels != -100).sum()
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum") / count, count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--samples", required=True, help="A:B, samples A..B-1")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", help="directory that relative model paths in the config resolve against "
                    "(default: the checkpoint's directory)")
    args = ap.parse_args()

    with h5py.File(args.checkpoint, "r") as f:
        job = json.loads(f.attrs["config"])
        params = {name: torch.tensor(np.asarray(f["params"][name]), requires_grad=True) for name in f["params"]}
    m_cfg = job["model"]
    base = args.base or os.path.dirname(os.path.abspath(args.checkpoint))
    vision = load_vision(resolve(m_cfg["vision"], base))
    llm = LlamaForCausalLM.from_pretrained(resolve(m_cfg["language"], base), attn_implementation="eager",
                                           torch_dtype=torch.float32).eval()
    for p in list(vision.parameters()) + list(llm.parameters()):
        p.requires_grad_(False)

    fusion = m_cfg.get("fusion", "dehvf")
    lv = vision.config.num_hidden_layers
    layers = m_cfg.get("vision_layers") or default_vision_layers(lv)
    if fusion != "dehvf":
        layers = [lv - 1]
    fs = float(m_cfg.get("feature_scale", 0.01))
    inj = float(m_cfg.get("injection_scale", 0.1))

    a, b = (int(x) for x in args.samples.split(":"))
    with h5py.File(args.data, "r") as f:
        mean = np.asarray(f.attrs["image_mean"], np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(f.attrs["image_std"], np.float32).reshape(1, 3, 1, 1)
        images = np.asarray(f["images"][a:b], np.float32) / 255.0
        pixels = torch.tensor((images - mean) / std)
        has_image = torch.tensor(np.asarray(f["has_image"][a:b]) != 0)
        ids = torch.tensor(np.asarray(f["input_ids"][a:b]), dtype=torch.long)
        lengths = torch.tensor(np.asarray(f["lengths"][a:b]), dtype=torch.long)
        labels = torch.tensor(np.asarray(f["labels"][a:b]), dtype=torch.long)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    feats = candidate_features(vision, pixels, layers, int(m_cfg.get("visual_tokens", 0)))  # [B,S,M,Dv]
    logits, full_labels = dehvf_logits(llm, params, feats, ids, mask, labels, has_image, fusion, fs, inj)
    loss, count = token_loss(logits, full_labels)
    loss.backward()

    with h5py.File(args.out, "w") as f:
        f["loss"] = np.float32(loss.item())
        g = f.create_group("grads")
        for name, p in params.items():
            g[name] = (p.grad if p.grad is not None else torch.zeros_like(p)).numpy().astype(np.float32)
    print(f"loss {loss.item():.6f} over {int(count)} label tokens; wrote {args.out}")


if __name__ == "__main__":
    main()
