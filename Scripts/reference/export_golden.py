#!/usr/bin/env python3
"""Writes Tests/Fixtures/export/<mode>.json: the choice logits Scripts/dehvf_torch.py computes for an
exported adapter, which the Swift tests (Tests/EndToEndTests/ExportTests.swift) compare with
`coordinator eval --logits` on the same checkpoint, within 1e-4, without needing torch.

    swift build -c release                          # coordinator and ExportFixture
    pip install torch transformers safetensors h5py
    Scripts/reference/export_golden.py [--build .build/release] [--out Tests/Fixtures/export]

For each fusion mode (dehvf, memvp, concat) it runs, as the test does:
    ExportFixture TMP                                   demo backbones, 32 rows, a perturbed checkpoint per mode
    coordinator export --checkpoint TMP/<mode> --out TMP/adapter-<mode>
    dehvf_torch.py --adapter TMP/adapter-<mode> --data TMP/rows.h5 --logits ...
    dehvf_torch.py --adapter TMP/adapter-<mode> --data TMP/captions.h5 --generate 6 --eos-token-id 2 ...
and keeps the logits and the greedy captions (token ids) with the SHA-256 of the adapter.safetensors they came from (the test checks that its
own export has the same bytes, so a changed fixture generator cannot pass unnoticed). Everything it reads is
a pure function of fixed seeds, so a rerun writes the same files up to torch's last bits.

It also checks that the fixture can catch a broken export: with any one trainable tensor zeroed, the torch
logits must move by more than 100x the test's tolerance, else the script fails.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
import dehvf_torch  # noqa: E402

TOLERANCE = 1e-4
MODES = ("dehvf", "memvp", "concat")
GENERATED = 6  # tokens per caption, as the Swift test asks `coordinator eval --generate` for


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, ".build", "release"),
                    help="directory holding the built coordinator and ExportFixture")
    ap.add_argument("--out", default=os.path.join(ROOT, "Tests", "Fixtures", "export"))
    args = ap.parse_args()
    import torch
    import transformers

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="export-golden-") as tmp:
        run([os.path.join(args.build, "ExportFixture"), tmp])
        rows_path = os.path.join(tmp, "rows.h5")
        for mode in MODES:
            adapter = os.path.join(tmp, f"adapter-{mode}")
            run([os.path.join(args.build, "coordinator"), "export", "--checkpoint", os.path.join(tmp, mode), "--out", adapter])
            logits_path = os.path.join(tmp, f"{mode}.json")
            run([sys.executable, os.path.join(ROOT, "Scripts", "dehvf_torch.py"), "--adapter", adapter,
                 "--data", rows_path, "--logits", logits_path, "--threads", "1"])
            with open(logits_path) as f:
                got = json.load(f)
            captions_path = os.path.join(tmp, f"{mode}-captions.jsonl")
            run([sys.executable, os.path.join(ROOT, "Scripts", "dehvf_torch.py"), "--adapter", adapter,
                 "--data", os.path.join(tmp, "captions.h5"), "--generate", str(GENERATED), "--eos-token-id", "2",
                 "--captions", captions_path, "--threads", "1"])
            with open(captions_path) as f:
                captions = [json.loads(line) for line in f]
            assert [c["index"] for c in captions] == list(range(len(captions)))
            with open(os.path.join(adapter, dehvf_torch.TENSORS), "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()

            # Every trainable tensor must matter far beyond the tolerance.
            model = dehvf_torch.DEHVF.from_adapter(adapter)
            rows = dehvf_torch.read_rows(rows_path, range(len(got["indices"])))
            base = model.choice_logits(rows)
            assert torch.allclose(base, torch.tensor(got["logits"]), atol=1e-6), "the module and the CLI disagree"
            with torch.no_grad():
                for name, p in model.fuser.named_parameters():
                    saved = p.detach().clone()
                    p.zero_()
                    moved = (model.choice_logits(rows) - base).abs().max().item()
                    p.copy_(saved)
                    print(f"  {mode}: zeroing {name} moves the logits by up to {moved:.4g}", file=sys.stderr)
                    if moved < 100 * TOLERANCE:
                        raise SystemExit(f"{mode}: {name} barely matters ({moved:.3g}); perturb it more in ExportFixture")
            print(f"  {mode}: logits span {base.min().item():.3f}..{base.max().item():.3f}, "
                  f"accuracy {got['accuracy']:.4f}", file=sys.stderr)

            fixture = {
                "fusion": mode,
                "adapter_sha256": digest,
                "choice_token_ids": got["choice_token_ids"],
                "indices": got["indices"],
                "logits": got["logits"],
                "predictions": got["predictions"],
                "answers": got["answers"],
                "accuracy": got["accuracy"],
                "captions": [c["generated"] for c in captions],
                "made_with": {"torch": torch.__version__, "transformers": transformers.__version__},
            }
            path = os.path.join(args.out, f"{mode}.json")
            with open(path, "w") as f:
                json.dump(fixture, f, sort_keys=True)
                f.write("\n")
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
