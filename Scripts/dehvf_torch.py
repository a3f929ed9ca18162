#!/usr/bin/env python3
"""Run a DEHVF adapter exported by `coordinator export` in PyTorch, on transformers' own CLIP and LLaMA.

    coordinator export --checkpoint runs/demo --out runs/demo-adapter
    python3 Scripts/dehvf_torch.py --adapter runs/demo-adapter --data data/demo/test.h5
    python3 Scripts/dehvf_torch.py --adapter runs/demo-adapter --data test.h5 --rows 0:32 --logits logits.json
    python3 Scripts/dehvf_torch.py --adapter runs/caption-adapter --data captions.h5 --generate 30

The frozen backbones are loaded with from_pretrained (float32) from the directories the adapter names (or
--vision/--language); the trainable fuser is rebuilt from adapter.safetensors and adapter_config.json. The
math is DESIGN.md section 4 with dropout off, the same as `coordinator eval`:
  F_j    = post_layernorm(vision hidden_states[j][:, 1:]), average-pooled to `visual_tokens`
  dehvf  : alpha_l = softmax(router.weight[l] . mean of x_l over the prompt + router.bias[l]); each LLaMA
           layer's `mlp` is wrapped so that MLP(x) gains injection_scale * SiLU(x K_lᵀ) V_l, with
           K_l = Z_l + prompt.key_pos, V_l = Z_l + prompt.value_pos, Z_l = feature_scale * P(sum_j alpha_lj F_j)
           (Z_l = 0 for a row without an image), P(F) = fc2(SiLU(fc1(F)))
  memvp  : the same with the last ViT layer only and no router
  concat : P(F) prepended as M input embeddings (zero and masked out without an image); no injection

A multiple-choice dataset (DESIGN.md section 5) is scored as `coordinator eval` scores it: the logits of
the choice letters at answer_position, the argmax over the first num_choices; --logits writes them in
the JSON layout of `coordinator eval --logits`. --generate N continues each row's prompt (its tokens
before the first label) greedily for up to N tokens, as `coordinator eval --generate` does.

As a module:
    import dehvf_torch
    model = dehvf_torch.DEHVF.from_adapter("runs/demo-adapter")
    rows = dehvf_torch.read_rows("data/demo/test.h5", range(0, 32))
    logits = model.choice_logits(rows)              # [rows, C] tensor
    captions = model.generate(rows, max_new_tokens=30)

Needs torch, transformers, safetensors, h5py and numpy (the trainer itself never needs Python).
"""
import argparse
import json
import math
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPVisionModel, LlamaForCausalLM

ADAPTER_FORMAT = "dehvf-adapter"
TENSORS = "adapter.safetensors"
CONFIG = "adapter_config.json"


# ---------------------------------------------------------------------------------------------------------
# The trainable part, under the DESIGN.md section 4 names (its state_dict keys are the exported tensor names)

class Router(nn.Module):
    def __init__(self, layers, candidates, width):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(layers, candidates, width))
        self.bias = nn.Parameter(torch.zeros(layers, candidates))


class Projector(nn.Module):
    """P(F) = fc2(SiLU(fc1(F)))."""

    def __init__(self, vision_width, rank, width):
        super().__init__()
        self.fc1 = nn.Linear(vision_width, rank)
        self.fc2 = nn.Linear(rank, width)

    def forward(self, f):
        return self.fc2(F.silu(self.fc1(f)))

    def from_pre(self, pre):
        """fc2(SiLU(pre)) for a pre-activation already through fc1."""
        return self.fc2(F.silu(pre))


class Prompt(nn.Module):
    def __init__(self, tokens, width):
        super().__init__()
        self.key_pos = nn.Parameter(torch.zeros(tokens, width))
        self.value_pos = nn.Parameter(torch.zeros(tokens, width))


class Fuser(nn.Module):
    """router (dehvf only), projector, prompt (not in concat), built from adapter_config.json."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        s, d = len(cfg["vision_layers"]), cfg["llm_width"]
        if cfg["fusion"] == "dehvf":
            self.router = Router(cfg["llm_layers"], s, d)
        self.projector = Projector(cfg["vision_width"], cfg["projector_rank"], d)
        if cfg["fusion"] != "concat":
            self.prompt = Prompt(cfg["visual_tokens"], d)

    def load_adapter(self, tensors):
        """Strict: a missing, extra or misshapen tensor is an error that names it."""
        mine = self.state_dict()
        problems = [f"missing {k} {list(v.shape)}" for k, v in mine.items() if k not in tensors]
        problems += [f"unexpected {k}" for k in tensors if k not in mine]
        problems += [f"{k} has shape {list(tensors[k].shape)}, expected {list(v.shape)}"
                     for k, v in mine.items() if k in tensors and tensors[k].shape != v.shape]
        if problems:
            raise ValueError(f"{TENSORS} does not fit a {self.cfg['fusion']} fuser: " + "; ".join(problems))
        self.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)


class _Memory:
    """What every wrapped MLP of one forward pass reads: set by DEHVF before the LLaMA runs."""

    def __init__(self):
        self.fc1 = None          # [B, S, M, r]: fc1 of each candidate feature, without the bias
        self.image = None        # [B, 1, 1]: 1 with an image, else 0
        self.prompt = None       # [B, T]: the positions the router averages
        self.count = None        # [B, 1]: how many (at least 1)


class FFNMemory(nn.Module):
    """A LLaMA layer's `mlp` plus DEHVF's visual key/value memory: MLP(x) + inj * SiLU(x Kᵀ) V.

    x is the MLP's input, post_attention_layernorm(h'), exactly what DESIGN.md's injection and router read.
    """

    def __init__(self, mlp, layer, fuser, memory):
        super().__init__()
        self.mlp = mlp
        self.layer = layer
        object.__setattr__(self, "fuser", fuser)     # shared, not a submodule of every layer
        object.__setattr__(self, "memory", memory)

    def forward(self, x):
        out = self.mlp(x)
        mem, fuser, cfg = self.memory, self.fuser, self.fuser.cfg
        if mem.fc1 is None:
            return out
        if cfg["fusion"] == "dehvf":
            u = (x * mem.prompt[..., None]).sum(1) / mem.count                          # [B, d]
            g = torch.einsum("bd,sd->bs", u, fuser.router.weight[self.layer]) + fuser.router.bias[self.layer]
            alpha = torch.softmax(g, -1)                                                # [B, S]
        else:
            alpha = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        pre = torch.einsum("bs,bsmr->bmr", alpha, mem.fc1) + fuser.projector.fc1.bias
        z = cfg["feature_scale"] * fuser.projector.from_pre(pre) * mem.image          # [B, M, d]
        keys = z + fuser.prompt.key_pos
        values = z + fuser.prompt.value_pos
        scores = F.silu(torch.einsum("btd,bmd->btm", x, keys))
        return out + cfg["injection_scale"] * torch.einsum("btm,bmd->btd", scores, values)


# ---------------------------------------------------------------------------------------------------------
# The model

def _resolve(path, base):
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


class DEHVF(nn.Module):
    """Frozen CLIPVisionModel + frozen LlamaForCausalLM + the exported fuser, in float32."""

    def __init__(self, vision, llm, cfg, tensors=None):
        super().__init__()
        self.cfg = cfg
        self.vision = vision.eval()
        self.llm = llm.eval()
        for p in list(vision.parameters()) + list(llm.parameters()):
            p.requires_grad_(False)
        self.fuser = Fuser(cfg)
        if tensors is not None:
            self.fuser.load_adapter(tensors)
        self._memory = _Memory()
        if cfg["fusion"] != "concat":
            for i, layer in enumerate(llm.model.layers):
                layer.mlp = FFNMemory(layer.mlp, i, self.fuser, self._memory)
        self._check_backbones()

    @classmethod
    def from_adapter(cls, adapter_dir, vision=None, language=None, attn_implementation="eager"):
        """Loads the adapter and the backbones it names (or `vision`/`language`), float32 on the CPU."""
        with open(os.path.join(adapter_dir, CONFIG)) as f:
            cfg = json.load(f)
        if cfg.get("format") != ADAPTER_FORMAT:
            raise ValueError(f"{adapter_dir}/{CONFIG} is not a DEHVF adapter config (format {cfg.get('format')!r})")
        base = os.path.dirname(os.path.abspath(os.path.join(adapter_dir, CONFIG)))
        vision_dir = vision or _resolve(cfg["vision"], base)
        language_dir = language or _resolve(cfg["language"], base)
        for what, d in (("vision", vision_dir), ("language", language_dir)):
            if not os.path.isdir(d):
                raise FileNotFoundError(f"the {what} backbone directory {d} does not exist; pass --{what} DIR")
        kw = dict(attn_implementation=attn_implementation)
        try:
            vm = CLIPVisionModel.from_pretrained(vision_dir, dtype=torch.float32, **kw)
            lm = LlamaForCausalLM.from_pretrained(language_dir, dtype=torch.float32, **kw)
        except TypeError:  # transformers 4 spells it torch_dtype
            vm = CLIPVisionModel.from_pretrained(vision_dir, torch_dtype=torch.float32, **kw)
            lm = LlamaForCausalLM.from_pretrained(language_dir, torch_dtype=torch.float32, **kw)
        return cls(vm, lm, cfg, load_file(os.path.join(adapter_dir, TENSORS)))

    def _check_backbones(self):
        cfg, vc, lc = self.cfg, self.vision.config, self.llm.config
        found = {"llm_layers": lc.num_hidden_layers, "llm_width": lc.hidden_size, "vision_width": vc.hidden_size,
                 "vision_depth": vc.num_hidden_layers, "patch_tokens": (vc.image_size // vc.patch_size) ** 2}
        wrong = [f"{k} {cfg[k]} (backbones: {v})" for k, v in found.items() if k in cfg and cfg[k] != v]
        if wrong:
            raise ValueError("the adapter was trained on other backbones: " + ", ".join(wrong))

    # -- vision ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def candidate_features(self, pixels):
        """F_j = post_layernorm(hidden_states[j][:, 1:]) for the candidate layers, average-pooled: [B, S, M, Dv]."""
        out = self.vision(pixel_values=pixels, output_hidden_states=True)
        tower = getattr(self.vision, "vision_model", self.vision)
        m = self.cfg["visual_tokens"]
        feats = []
        for j in self.cfg["vision_layers"]:
            f = tower.post_layernorm(out.hidden_states[j][:, 1:])
            b, n, dv = f.shape
            side, mside = math.isqrt(n), math.isqrt(m)
            if mside != side:
                f = f.reshape(b, side, side, dv).permute(0, 3, 1, 2)
                f = F.avg_pool2d(f, side // mside).permute(0, 2, 3, 1).reshape(b, m, dv)
            feats.append(f)
        return torch.stack(feats, 1)

    # -- language ----------------------------------------------------------------------------------------

    def final_hidden(self, input_ids, lengths, prompt_count, feats, has_image):
        """The LLaMA's last hidden state (after its final norm) for a right-padded batch, with the fuser:
        [B, T', d], T' = M + T in concat (text at M..M+T-1), else T."""
        b, t = input_ids.shape
        text_mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
        img = has_image.to(torch.float32)[:, None, None]
        embeds = self.llm.model.embed_tokens(input_ids)
        if self.cfg["fusion"] == "concat":
            vis = self.fuser.projector(feats[:, 0]) * img                             # [B, M, d]
            m = vis.shape[1]
            embeds = torch.cat([vis, embeds], 1)
            mask = torch.cat([has_image.long()[:, None].expand(b, m), text_mask], 1)
        else:
            m = 0
            mem = self._memory
            mem.fc1 = torch.einsum("bsmv,rv->bsmr", feats, self.fuser.projector.fc1.weight)
            mem.image = img
            mem.prompt = ((torch.arange(t)[None, :] < prompt_count[:, None]) & (text_mask == 1)).to(torch.float32)
            mem.count = mem.prompt.sum(1, keepdim=True).clamp(min=1)
            mask = text_mask
        positions = torch.arange(m + t)[None, :].expand(b, m + t)
        try:
            out = self.llm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
        finally:
            self._memory.fc1 = None
        return out.last_hidden_state

    @torch.no_grad()
    def next_token_logits(self, rows, positions, input_ids=None, lengths=None, prompt_count=None):
        """Full-vocabulary logits [B, V] at text position positions[b] of each row."""
        input_ids = rows["input_ids"] if input_ids is None else input_ids
        lengths = rows["lengths"] if lengths is None else lengths
        prompt_count = rows["prompt_count"] if prompt_count is None else prompt_count
        feats = self._features(rows)
        h = self.final_hidden(input_ids, lengths, prompt_count, feats, rows["has_image"])
        shift = self.cfg["visual_tokens"] if self.cfg["fusion"] == "concat" else 0
        picked = h[torch.arange(h.shape[0]), shift + positions]
        return self.llm.lm_head(picked)

    def _features(self, rows):
        if "features" not in rows:
            feats = self.candidate_features(rows["pixels"])
            rows["features"] = feats * rows["has_image"].to(torch.float32)[:, None, None, None]
        return rows["features"]

    @torch.no_grad()
    def choice_logits(self, rows):
        """Logits of the choice letters at each row's answer_position: [B, C]."""
        ids = torch.as_tensor(rows["choice_token_ids"], dtype=torch.long)
        return self.next_token_logits(rows, rows["answer_position"])[:, ids]

    @torch.no_grad()
    def generate(self, rows, max_new_tokens, eos=None, pad=0):
        """Greedy continuations of each row's prompt (its tokens before the first label), as lists of ids
        (ending with `eos` if it came). Reruns the whole prefix each step, as `coordinator eval` does."""
        if eos is None:
            eos = getattr(self.llm.config, "eos_token_id", None)
            eos = eos[0] if isinstance(eos, (list, tuple)) else eos
        ids, prompt = rows["input_ids"], rows["prompt_count"]
        seqs = [ids[b, : max(1, int(prompt[b]))].tolist() for b in range(ids.shape[0])]
        starts = [len(s) for s in seqs]
        done = [False] * len(seqs)
        for _ in range(max_new_tokens):
            if all(done):
                break
            width = max(len(s) for s in seqs)
            batch = torch.full((len(seqs), width), pad, dtype=torch.long)
            for b, s in enumerate(seqs):
                batch[b, : len(s)] = torch.tensor(s)
            lengths = torch.tensor([len(s) for s in seqs])
            logits = self.next_token_logits(rows, lengths - 1, input_ids=batch, lengths=lengths,
                                            prompt_count=torch.tensor(starts))
            best = logits.argmax(-1).tolist()
            for b in range(len(seqs)):
                if not done[b]:
                    seqs[b].append(best[b])
                    done[b] = eos is not None and best[b] == eos
        return [s[k:] for s, k in zip(seqs, starts)]


# ---------------------------------------------------------------------------------------------------------
# Data (DESIGN.md section 5)

def read_rows(path, indices):
    """Rows `indices` of a dataset file as tensors, cut to their longest row: input_ids, labels, lengths,
    prompt_count (positions before the first label), has_image, pixels (CLIP-normalised), and for
    multiple-choice files answer, num_choices, answer_position, choice_token_ids."""
    indices = np.asarray(list(indices), dtype=np.int64)
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") not in ("dehvf-dataset", b"dehvf-dataset"):
            raise ValueError(f"{path} is not a DEHVF dataset file (format {f.attrs.get('format')!r})")
        n = f["input_ids"].shape[0]
        if len(indices) and (indices.min() < 0 or indices.max() >= n):
            raise IndexError(f"rows {indices.min()}..{indices.max()} are outside {path}'s {n} rows")
        task = f.attrs["task"]
        task = task.decode() if isinstance(task, bytes) else str(task)
        if not len(indices):
            raise ValueError("no rows to read")

        def take(name, cut=None):  # row by row: a file's big columns are never read whole
            return np.stack([np.asarray(f[name][int(i)])[:cut] for i in indices])

        lengths = np.asarray(f["lengths"][()], np.int64)[indices]
        t = max(1, int(lengths.max()))
        ids = take("input_ids", t).astype(np.int64)
        labels = take("labels", t).astype(np.int64)
        image_rows = np.asarray(f["image_index"][()], np.int64)[indices] if "image_index" in f else indices
        images = np.stack([np.asarray(f["images"][int(i)]) for i in image_rows])
        mean = np.asarray(f.attrs["image_mean"], np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(f.attrs["image_std"], np.float32).reshape(1, 3, 1, 1)
        rows = {"indices": indices.tolist(), "task": task,
                "input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "lengths": torch.tensor(lengths),
                "has_image": torch.tensor(np.asarray(f["has_image"][()])[indices] != 0),
                "pixels": torch.tensor((images.astype(np.float32) / np.float32(255) - mean) / std)}
        if task == "multiple-choice":
            for name in ("answer", "num_choices", "answer_position"):
                rows[name] = torch.tensor(np.asarray(f[name][()], np.int64)[indices])
            rows["choice_token_ids"] = np.asarray(f["choice_token_ids"][()], np.int64).tolist()
        if "references" in f:
            refs = f["references"][()][indices]
            rows["references"] = [r.decode() if isinstance(r, bytes) else str(r) for r in refs]
    labelled = labels != -100
    first = np.where(labelled.any(1), labelled.argmax(1), t)
    rows["prompt_count"] = torch.tensor(np.minimum(first, lengths))
    return rows


def parse_rows(spec, n):
    if not spec:
        return range(n)
    a, _, b = spec.partition(":")
    a, b = int(a or 0), int(b or n)
    if not (0 <= a <= b <= n):
        raise SystemExit(f"--rows {spec}: the file has rows 0..{n - 1}")
    return range(a, b)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, metavar="DIR", help="directory written by `coordinator export`")
    ap.add_argument("--data", required=True, metavar="FILE.h5", help="dataset file (DESIGN.md section 5)")
    ap.add_argument("--rows", metavar="A:B", help="score rows A..B-1 only (default: every row)")
    ap.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    ap.add_argument("--vision", metavar="DIR", help="vision backbone directory (default: the adapter's)")
    ap.add_argument("--language", metavar="DIR", help="language backbone directory (default: the adapter's)")
    ap.add_argument("--logits", metavar="FILE.json",
                    help="multiple choice: write each row's choice logits, prediction and answer as JSON "
                         "(the layout of `coordinator eval --logits`)")
    ap.add_argument("--generate", type=int, metavar="N", default=0,
                    help="greedy continuation of each row's prompt, up to N tokens, printed as JSON lines "
                         "{index, generated, text?, references?}")
    ap.add_argument("--captions", metavar="FILE.jsonl", help="with --generate: write the JSON lines here instead of stdout")
    ap.add_argument("--eos-token-id", type=int, help="token that ends a caption (default: the LLaMA's eos_token_id)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error("--batch-size must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = DEHVF.from_adapter(args.adapter, vision=args.vision, language=args.language)
    with h5py.File(args.data, "r") as f:
        n = f["input_ids"].shape[0]
    wanted = parse_rows(args.rows, n)
    cfg = model.cfg
    print(f"dehvf_torch: {cfg['fusion']} adapter of step {cfg.get('step')} on {cfg['vision']} + {cfg['language']}; "
          f"{len(wanted)} rows of {args.data}", file=sys.stderr)

    tokenizer = None
    if args.generate:
        try:
            from tokenizers import Tokenizer
            path = os.path.join(args.language or cfg["language"], "tokenizer.json")
            tokenizer = Tokenizer.from_file(path) if os.path.exists(path) else None
        except ImportError:
            pass
    captions_out = open(args.captions, "w") if args.captions else sys.stdout

    indices, logits, predictions, answers = [], [], [], []
    task = None
    for start in range(wanted.start, wanted.stop, args.batch_size):
        rows = read_rows(args.data, range(start, min(start + args.batch_size, wanted.stop)))
        task = rows["task"]
        if task == "multiple-choice":
            lg = model.choice_logits(rows)
            for i, row in enumerate(lg):
                k = max(1, min(int(rows["num_choices"][i]), row.shape[0]))
                predictions.append(int(row[:k].argmax()))
            logits += lg.tolist()
            answers += rows["answer"].tolist()
            indices += rows["indices"]
        if args.generate:
            for i, ids in zip(rows["indices"], model.generate(rows, args.generate, eos=args.eos_token_id)):
                line = {"index": i, "generated": ids}
                if tokenizer is not None:
                    line["text"] = tokenizer.decode(ids, skip_special_tokens=True)
                if "references" in rows:
                    line["references"] = json.loads(rows["references"][i - start])
                print(json.dumps(line, sort_keys=True), file=captions_out, flush=True)
    if args.captions:
        captions_out.close()
        print(f"dehvf_torch: wrote {len(wanted)} captions to {args.captions}", file=sys.stderr)

    if task == "multiple-choice" and indices:
        right = sum(int(p == a) for p, a in zip(predictions, answers))
        accuracy = right / len(indices)
        print(f"accuracy {100 * accuracy:.2f}% ({right}/{len(indices)}) on {args.data}")
        if args.logits:
            with open(args.logits, "w") as f:
                json.dump({"dataset": args.data, "checkpoint": cfg.get("checkpoint", ""), "step": cfg.get("step", 0),
                           "fusion": cfg["fusion"], "choice_token_ids": rows["choice_token_ids"], "indices": indices,
                           "logits": logits, "predictions": predictions, "answers": answers, "accuracy": accuracy},
                          f, sort_keys=True)
                f.write("\n")
            print(f"dehvf_torch: wrote the choice logits of {len(indices)} rows to {args.logits}", file=sys.stderr)
    elif args.logits:
        raise SystemExit(f"--logits needs a multiple-choice dataset; {args.data} is {task}")


if __name__ == "__main__":
    main()
