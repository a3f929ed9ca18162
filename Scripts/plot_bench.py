#!/usr/bin/env python3
"""Bar charts of `bench --json` output, optionally against Scripts/bench_pytorch.py output.

    Scripts/plot_bench.py ours.json [--pytorch torch.json] [--out DIR]

Writes DIR/step_samples.png and DIR/infer_samples.png (samples/s per mode and config, ours vs PyTorch
eager, error bars = min..max of the runs), DIR/step_ceiling.png and DIR/infer_ceiling.png (the same as
a fraction of the sgemm ceiling measured in the same run: comparable across runs on a shared machine)
and DIR/dehvf_vs_concat.png (time ratios). Needs matplotlib
(a tool for people, not a product dependency).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODES = ["dehvf", "memvp", "concat"]


def load(path):
    with open(path) as f:
        return json.load(f)


def find(figs, suite, config, mode, name):
    for f in figs:
        if f["suite"] == suite and f["config"] == config and f["mode"] == mode and f["name"] == name:
            return f
    return None


def bars(ax, series, labels, groups, unit):
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(zip(labels, series)):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        med = [v["median"] if v else 0 for v in values]
        lo = [v["median"] - v["min"] if v else 0 for v in values]
        hi = [v["max"] - v["median"] if v else 0 for v in values]
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=3, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(unit)
    ax.legend()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ours")
    ap.add_argument("--pytorch")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    ours = load(args.ours)
    theirs = load(args.pytorch) if args.pytorch else []
    os.makedirs(args.out, exist_ok=True)
    configs = sorted({f["config"] for f in ours if f["suite"] in ("step", "infer")})

    for suite, name, stem, unit in [(s, n, f"{s}_{stem}", u) for s in ("step", "infer")
                                    for n, stem, u in (("samples/s", "samples", "samples/s"),
                                                       ("fraction of gemm ceiling", "ceiling", "fraction of sgemm 2048"))]:
        if not any(f["suite"] == suite for f in ours):
            continue
        groups = [f"{c}\n{m}" for c in configs for m in MODES]
        series = [[find(ours, suite, c, m, name) for c in configs for m in MODES]]
        labels = ["swift (ours)"]
        if theirs:
            series.append([find(theirs, suite, c, m, name) for c in configs for m in MODES])
            labels.append("pytorch eager")
        fig, ax = plt.subplots(figsize=(9, 4.5))
        bars(ax, series, labels, groups, unit)
        ax.set_title(f"{suite}: {name} (median, bars min..max)")
        fig.tight_layout()
        path = os.path.join(args.out, f"{stem}.png")
        fig.savefig(path, dpi=120)
        print("wrote", path)

    groups, series_o, series_t = [], [], []
    for suite, name in (("step", "step time ratio"), ("infer", "time ratio")):
        for c in configs:
            f = find(ours, suite, c, "dehvf/concat", name)
            if f:
                groups.append(f"{suite}\n{c}")
                series_o.append(f)
                series_t.append(find(theirs, suite, c, "dehvf/concat", name))
    if groups:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        series, labels = [series_o], ["swift (ours)"]
        if theirs:
            series.append(series_t)
            labels.append("pytorch eager")
        bars(ax, series, labels, groups, "dehvf time / concat time")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title("dehvf vs concat (lower = dehvf cheaper)")
        fig.tight_layout()
        path = os.path.join(args.out, "dehvf_vs_concat.png")
        fig.savefig(path, dpi=120)
        print("wrote", path)


if __name__ == "__main__":
    main()
