#!/usr/bin/env python3
"""Checks a run's TensorBoard log (CHECKPOINT_DIR/tb) against its train.jsonl, reading the event files with
TensorBoard's own loader (EventAccumulator, as `tensorboard --logdir` without the Rust data server).

    pip install tensorboard
    Scripts/reference/check_tensorboard.py CHECKPOINT_DIR

What train.jsonl says TensorBoard must show (README, "TensorBoard"): every number of a step line as
`train/<key>` at x = step + 1 (steps completed), of an eval line as `eval/<key>` at x = step, an eval
line's `categories` as `eval/categories/<name>`. A line whose x is not past the previous line of its kind
starts a resumed run: what was logged at that x or later is replaced by what follows, so each x shows once.
Values are float32 (`simple_value`), so they must equal the JSON number rounded to float32, exactly.
Prints a JSON summary; exits 1 with the mismatches.
"""
import json
import os
import struct
import sys

from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def expected(lines):
    points = {}          # tag -> {x: value}
    last = {}            # "train" | "eval" -> last x
    restarts = replaced = 0
    for o in lines:
        if "step" not in o:
            continue
        kind = "eval" if "eval" in o else "train"
        x = o["step"] if kind == "eval" else o["step"] + 1
        if kind in last and x <= last[kind]:
            restarts += 1
            for series in points.values():
                for old in [s for s in series if s >= x]:
                    del series[old]
                    replaced += 1
            last = {k: min(v, x - 1) for k, v in last.items()}
        last[kind] = x
        for key, v in o.items():
            if key == "step":
                continue
            if number(v):
                points.setdefault(f"{kind}/{key}", {})[x] = v
            elif isinstance(v, dict):
                for name, inner in v.items():
                    if number(inner):
                        points.setdefault(f"{kind}/{key}/{name}", {})[x] = inner
    return {t: s for t, s in points.items() if s}, restarts, replaced


def main():
    run = sys.argv[1]
    with open(os.path.join(run, "train.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    want, restarts, replaced = expected(lines)
    acc = EventAccumulator(os.path.join(run, "tb"), size_guidance={SCALARS: 0})
    acc.Reload()
    tags = sorted(acc.Tags()["scalars"])
    problems = []
    if tags != sorted(want):
        problems.append(f"tags {tags} != expected {sorted(want)}")
    points = 0
    for tag in sorted(set(tags) & set(want)):
        got = acc.Scalars(tag)
        steps = [e.step for e in got]
        points += len(got)
        if steps != sorted(want[tag]):
            problems.append(f"{tag}: steps {steps} != expected {sorted(want[tag])}")
            continue
        for e in got:
            if e.value != f32(want[tag][e.step]):
                problems.append(f"{tag} at {e.step}: {e.value!r} != float32({want[tag][e.step]!r})")
    files = sorted(n for n in os.listdir(os.path.join(run, "tb")) if "tfevents" in n)
    print(json.dumps({"tags": tags, "points": points, "files": files, "lines": len(lines),
                      "restarts": restarts, "replaced": replaced, "problems": problems}))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
