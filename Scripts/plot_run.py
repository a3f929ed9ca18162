#!/usr/bin/env python3
"""Loss curve of a training run from its JSON-lines log.

    Scripts/plot_run.py runs/<dir>/train.jsonl [--out loss.png]

A step line has keys step, epoch, loss, lr, samples_per_s, step_s, workers; an eval line has keys eval
(the dataset), step, accuracy, loss. A resumed run re-logs the steps after its checkpoint: the later line
of a step wins (the values are bitwise the same anyway). Draws training loss per step, eval loss as
points on the same axis, and eval accuracy on a second axis when present. Needs matplotlib (a tool for
people).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--out")
    args = ap.parse_args()
    by_step, evals = {}, []
    with open(args.log) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{args.log}:{n}: not JSON ({e})")
            if "eval" in rec:
                evals.append(rec)
            elif "step" in rec and "loss" in rec:
                by_step[rec["step"]] = rec["loss"]
    steps = sorted(by_step)
    losses = [by_step[s] for s in steps]
    for e in evals:   # older logs put the step in `eval`
        e["at"] = e["step"] if isinstance(e.get("step"), (int, float)) else (
            e["eval"] if isinstance(e["eval"], (int, float)) else (steps[-1] if steps else 0))
    if not steps and not evals:
        raise SystemExit(f"{args.log}: no step or eval lines")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, losses, lw=1, label="train loss")
    if evals and any("loss" in e for e in evals):
        ax.plot([e["at"] for e in evals if "loss" in e], [e["loss"] for e in evals if "loss" in e], "o-",
                label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if evals and any("accuracy" in e for e in evals):
        ax2 = ax.twinx()
        ax2.plot([e["at"] for e in evals if "accuracy" in e], [e["accuracy"] for e in evals if "accuracy" in e],
                 "s--", color="tab:green", label="eval accuracy")
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="center right")
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(args.log))) or args.log)
    fig.tight_layout()
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.log)), "loss.png")
    fig.savefig(out, dpi=120)
    print("wrote", out)


if __name__ == "__main__":
    main()
