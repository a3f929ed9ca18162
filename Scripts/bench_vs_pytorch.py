#!/usr/bin/env python3
"""Issue 7's side-by-side targets: `bench step`/`bench infer` and Scripts/bench_pytorch.py in alternating rounds.

    Scripts/bench_vs_pytorch.py [--rounds 3] [--runs 5] [--threads 2] [--out docs/bench]

On a shared machine the load changes from minute to minute, so a Swift figure is only compared with the
PyTorch figure of the same round: each round runs `bench step`, then PyTorch's step, then `bench infer`,
then PyTorch's infer, and every ratio below is per round, reported as the median over rounds with its
range. Writes OUT/swift.json and OUT/pytorch.json (per figure: the median of the round medians, the min
of the mins, the max of the maxes; what Scripts/plot_bench.py draws) and OUT/rounds.json (every round's
raw figures), and prints the targets table. Needs a release build (`swift build -c release`) and torch +
transformers for the PyTorch side; neither is a product dependency.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ["dehvf", "memvp", "concat"]
CONFIGS = ["bench", "paper-shape"]


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)


def figure(figs, suite, config, mode, name):
    for f in figs:
        if (f["suite"], f["config"], f["mode"], f["name"]) == (suite, config, mode, name):
            return f
    return None


def merge(rounds):
    """Per figure over rounds: median of medians, min of mins, max of maxes."""
    keyed = {}
    for figs in rounds:
        for f in figs:
            keyed.setdefault((f["suite"], f["config"], f["mode"], f["name"], f["unit"]), []).append(f)
    out = []
    for (suite, config, mode, name, unit), fs in keyed.items():
        out.append({"suite": suite, "config": config, "mode": mode, "name": name, "unit": unit,
                    "median": statistics.median(f["median"] for f in fs),
                    "min": min(f["min"] for f in fs), "max": max(f["max"] for f in fs)})
    return out


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"))
    args = ap.parse_args()
    bench = os.path.join(ROOT, ".build", "release", "bench")
    if not os.path.exists(bench):
        sys.exit(f"{bench} is missing: run `swift build -c release` first")

    swift_rounds, torch_rounds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            print(f"== round {r + 1} of {args.rounds}", flush=True)
            ours, theirs = [], []
            for suite in ("step", "infer"):
                s_path, t_path = os.path.join(tmp, f"s{r}{suite}.json"), os.path.join(tmp, f"t{r}{suite}.json")
                run([bench, suite, "--runs", str(args.runs), "--threads", str(args.threads), "--json", s_path])
                run([sys.executable, os.path.join(ROOT, "Scripts", "bench_pytorch.py"), "--suites", suite,
                     "--runs", str(args.runs), "--threads", str(args.threads), "--json", t_path])
                ours += json.load(open(s_path))
                theirs += json.load(open(t_path))
            swift_rounds.append(ours)
            torch_rounds.append(theirs)

    os.makedirs(args.out, exist_ok=True)
    for name, data in (("swift.json", merge(swift_rounds)), ("pytorch.json", merge(torch_rounds)),
                       ("rounds.json", {"swift": swift_rounds, "pytorch": torch_rounds})):
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(data, f, indent=1)
        print("wrote", os.path.join(args.out, name))

    rows = []

    def row(label, target, values, ok):
        s = spread(values)
        if s is None:
            rows.append((label, target, "not measured", "-"))
            return
        med, lo, hi = s
        rows.append((label, target, f"{med:.3f} [{lo:.3f}, {hi:.3f}]", "met" if ok(med) else "NOT met"))

    def per_round(fn):
        return [fn(o, t) for o, t in zip(swift_rounds, torch_rounds)]

    def val(figs, *key):
        f = figure(figs, *key)
        return f["median"] if f else None

    row("step, bench, dehvf: fraction of sgemm ceiling", ">= 0.50",
        per_round(lambda o, t: val(o, "step", "bench", "dehvf", "fraction of gemm ceiling")), lambda v: v >= 0.5)
    for suite in ("step", "infer"):
        for config in CONFIGS:
            for mode in MODES:
                def ratio(o, t, suite=suite, config=config, mode=mode):
                    a, b = val(o, suite, config, mode, "samples/s"), val(t, suite, config, mode, "samples/s")
                    return a / b if a and b else None
                target = ">= 1.0" if suite == "step" else "-"
                row(f"{suite}, {config}, {mode}: Swift / PyTorch samples/s", target, per_round(ratio),
                    (lambda v: v >= 1.0) if suite == "step" else (lambda v: True))
    for suite, name, target, bound in (("step", "step time ratio", "<= 0.45", 0.45), ("infer", "time ratio", "<= 0.40", 0.40)):
        for side, rounds in (("Swift", swift_rounds), ("PyTorch", torch_rounds)):
            row(f"{suite}, paper-shape: dehvf / concat time ({side})", target if side == "Swift" else "-",
                [val(o, suite, "paper-shape", "dehvf/concat", name) for o in rounds],
                (lambda v, b=bound: v <= b) if side == "Swift" else (lambda v: True))

    print()
    print("| figure | target | median [min, max] over rounds | |")
    print("| --- | --- | --- | --- |")
    for label, target, value, verdict in rows:
        print(f"| {label} | {target} | {value} | {verdict if target != '-' else ''} |")


if __name__ == "__main__":
    main()
