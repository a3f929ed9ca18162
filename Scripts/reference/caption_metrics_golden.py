#!/usr/bin/env python3
"""Checks Scripts/caption_metrics.py against pycocoevalcap and writes the golden file the tests use.

    pip install pycocoevalcap
    python3 Scripts/reference/caption_metrics_golden.py [--out Tests/Fixtures/captions/metrics_golden.json]

Random captions over a small vocabulary (so n-grams overlap), 1-5 references per image, scored by
pycocoevalcap's Cider (CIDEr-D), Bleu(4) and Rouge (ROUGE-L) on captions that are already tokenised
(space-joined words, which is what its PTBTokenizer hands the scorers), and by caption_metrics.py's
functions on the same words. Fails if any figure differs by more than 1e-9; writes the inputs and
pycocoevalcap's figures. Empty hypotheses are left out: pycocoevalcap scores "" as one empty word.
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import caption_metrics as cm  # noqa: E402

from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

WORDS = "a the red blue dog cat on under sits runs two small big street grass ball".split()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    ap.add_argument("--out", default=os.path.join(root, "Tests/Fixtures/captions/metrics_golden.json"))
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    rng = random.Random(a.seed)

    def caption():
        return [rng.choice(WORDS) for _ in range(rng.randint(1, 10))]

    refs = [[caption() for _ in range(rng.randint(1, 5))] for _ in range(a.images)]
    hyps = []
    for rs in refs:
        kind = rng.random()
        if kind < 0.15:
            hyps.append(list(rs[0]))                      # exactly a reference
        elif kind < 0.5:
            h = list(rng.choice(rs))                       # a reference with a word changed
            h[rng.randrange(len(h))] = rng.choice(WORDS)
            hyps.append(h)
        else:
            hyps.append(caption())
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}

    _, cider = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    _, rouge = Rouge().compute_score(gts, res)
    expected = {"cider_d": [float(x) for x in cider], "bleu": [float(x) for x in bleu], "rouge_l": [float(x) for x in rouge]}
    ours = {"cider_d": cm.cider_d(hyps, refs), "bleu": cm.bleu(hyps, refs), "rouge_l": cm.rouge_l(hyps, refs)}
    worst = max(abs(x - y) for k in expected for x, y in zip(expected[k], ours[k]))
    print(f"{a.images} images: largest difference from pycocoevalcap {worst:.3g} "
          f"(CIDEr-D {sum(cider) / len(cider):.4f}, BLEU-4 {bleu[3]:.4f}, ROUGE-L {sum(rouge) / len(rouge):.4f})")
    if worst > 1e-9:
        raise SystemExit("caption_metrics.py differs from pycocoevalcap")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump({"generator": "Scripts/reference/caption_metrics_golden.py", "seed": a.seed,
                   "hypotheses": hyps, "references": refs, **expected}, f, indent=1)
        f.write("\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
