#!/usr/bin/env python3
"""COCO caption metrics (CIDEr-D, BLEU-1..4, ROUGE-L) of greedily generated captions.

    python3 Scripts/caption_metrics.py GENERATED.jsonl --tokenizer LANGUAGE_MODEL_DIR [--json OUT.json]

Input: the JSON-lines file written by `coordinator eval --generate`, one image a line:
{"index": 12, "generated": [318, 3303, 373, 2], "references": ["A man riding a bike.", ...]}, where
`generated` holds the token ids produced after the prompt (maybe ending with EOS, maybe empty) and
`references` the image's reference captions. The ids are decoded with the Hugging Face tokenizer at
LANGUAGE_MODEL_DIR/tokenizer.json (or a .json path given directly), skipping special tokens.

Normalisation stands in for pycocoevalcap's Java PTBTokenizer: lowercase; the clitics 's 're 've 'll 'd
'm n't split off as PTB does; words (letters, digits, inner hyphens as in "t-shirt", numbers as "3.5")
kept; every other character, so every PTB punctuation token ('' ' `` ` -LRB- -RRB- . ? ! , : - -- ...
;) and any other ASCII punctuation, dropped. Scores can differ slightly from the Java pipeline on
unusual text.

Metrics, computed as pycocoevalcap computes them from tokenised captions (checked to 1e-6 against it):
- CIDEr-D (cider/cider_scorer.py): n-grams 1..4, tf-idf weights with document frequencies over the
  references of the evaluated images and log(number of images) as the reference length, the clipped
  product min(w_hyp, w_ref) * w_ref over the norms, the gaussian length penalty (sigma 6, lengths
  counted as pycocoevalcap does, in bigrams), mean over n and references, x10, mean over images.
- BLEU-1..4 (bleu/bleu_scorer.py): corpus-level with clipped n-gram counts and the brevity penalty
  against each image's closest reference length ("closest"), including its 1e-9/1e-15 smoothing.
- ROUGE-L (rouge/rouge.py): per image, the longest common subsequence with each reference; precision
  and recall are each the best over the references, F with beta 1.2; mean over images.
Scripts/reference/caption_metrics_golden.py reruns the comparison with pycocoevalcap and writes the
golden file the tests check these functions against.
Needs only the `tokenizers` package: a tool for people, not a dependency of the product.
"""
import argparse
import json
import math
import os
import re
from collections import Counter

N, SIGMA = 4, 6.0
WORD = re.compile(r"\w+?(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,]\d+)+|\w+(?:-\w+)*")


def normalise(text):
    """Caption text to the list of lowercase words the metrics compare."""
    return WORD.findall(text.lower())


def ngrams(words, n=N):
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def cider_d(hyps, refs):
    """Per-image CIDEr-D; hyps: list of word lists, refs: list of lists of word lists."""
    ref_counts = [[ngrams(r) for r in rs] for rs in refs]
    df = Counter(g for rcs in ref_counts for g in set().union(*rcs))
    log_images = math.log(float(len(refs)))

    def vector(counts):
        vec, norm = [{} for _ in range(N)], [0.0] * N
        for g, tf in counts.items():
            w = tf * (log_images - math.log(max(1.0, df[g])))
            vec[len(g) - 1][g] = w
            norm[len(g) - 1] += w * w
        length = sum(tf for g, tf in counts.items() if len(g) == 2)  # pycocoevalcap counts bigrams
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for h, rcs in zip(hyps, ref_counts):
        vh, nh, lh = vector(ngrams(h))
        total = [0.0] * N
        for rc in rcs:
            vr, nr, lr = vector(rc)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * SIGMA ** 2))
            for n in range(N):
                val = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                total[n] += val * penalty
        scores.append(sum(total) / N / len(rcs) * 10.0)
    return scores


def bleu(hyps, refs):
    """Corpus BLEU-1..4 with the "closest" reference length, as pycocoevalcap's BleuScorer."""
    small, tiny = 1e-9, 1e-15
    correct, guess, test_len, ref_len = [0] * N, [0] * N, 0, 0
    for h, rs in zip(hyps, refs):
        max_ref = Counter()
        for r in rs:
            max_ref |= ngrams(r)  # elementwise max of the counts
        for g, c in ngrams(h).items():
            correct[len(g) - 1] += min(max_ref[g], c)
        for k in range(N):
            guess[k] += max(0, len(h) - k)
        test_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
    out, prod = [], 1.0
    for k in range(N):
        prod *= (correct[k] + tiny) / (guess[k] + small)
        out.append(prod ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def lcs(a, b):
    """Length of the longest common subsequence of two word lists."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(hyps, refs, beta=1.2):
    """Per-image ROUGE-L as pycocoevalcap's Rouge.calc_score: best precision and best recall over the
    references (each on its own), then their F-measure with beta 1.2."""
    scores = []
    for h, rs in zip(hyps, refs):
        precisions, recalls = [], []
        for r in rs:
            common = lcs(r, h)
            precisions.append(common / float(len(h)) if h else 0.0)
            recalls.append(common / float(len(r)) if r else 0.0)
        p, r = max(precisions), max(recalls)
        scores.append((1 + beta ** 2) * p * r / (r + beta ** 2 * p) if p != 0 and r != 0 else 0.0)
    return scores


def load_tokenizer(path):
    from tokenizers import Tokenizer

    file = path if path.endswith(".json") else os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
        raise SystemExit(f"no tokenizer at {file}: pass --tokenizer the language model's directory "
                         "(the one holding tokenizer.json) or the tokenizer.json file itself")
    return Tokenizer.from_file(file)


def read_records(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not JSON ({e})")
            if not isinstance(rec, dict):
                raise SystemExit(f"{path}:{n}: expected a JSON object with `generated` and `references`")
            gen, refs = rec.get("generated"), rec.get("references")
            if not isinstance(gen, list) or not all(isinstance(t, int) and t >= 0 for t in gen):
                raise SystemExit(f"{path}:{n}: `generated` must be a list of token ids")
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                raise SystemExit(f"{path}:{n}: `references` must be a non-empty list of strings")
            records.append((rec.get("index", n - 1), gen, refs))
    if not records:
        raise SystemExit(f"{path}: no records (empty file; did `coordinator eval --generate` finish?)")
    return records


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generated", help="GENERATED.jsonl from `coordinator eval --generate`")
    ap.add_argument("--tokenizer", required=True, help="language model directory or its tokenizer.json")
    ap.add_argument("--json", help="also write the numbers and a few examples here")
    ap.add_argument("--examples", type=int, default=5, help="example pairs in --json (default 5)")
    a = ap.parse_args()

    if not os.path.isfile(a.generated):
        raise SystemExit(f"{a.generated}: no such file")
    tok = load_tokenizer(a.tokenizer)
    records = read_records(a.generated)
    texts = [tok.decode(gen, skip_special_tokens=True).strip() for _, gen, _ in records]
    hyps = [normalise(t) for t in texts]
    refs = [[normalise(r) for r in rs] for _, _, rs in records]

    cider = cider_d(hyps, refs)
    b = bleu(hyps, refs)
    rouge = rouge_l(hyps, refs)
    result = {
        "images": len(records),
        "cider_d": sum(cider) / len(cider),
        **{f"bleu_{k + 1}": b[k] for k in range(N)},
        "rouge_l": sum(rouge) / len(rouge),
        "mean_generated_words": sum(map(len, hyps)) / len(hyps),
        "mean_generated_tokens": sum(len(g) for _, g, _ in records) / len(records),
        "examples": [{"index": i, "hypothesis": t, "reference": rs[0]}
                     for (i, _, rs), t in list(zip(records, texts))[:a.examples]],
    }
    rows = [("images", f"{result['images']}"), ("CIDEr-D", f"{result['cider_d']:.4f}"),
            ("BLEU-1", f"{b[0]:.4f}"), ("BLEU-4", f"{b[3]:.4f}"), ("ROUGE-L", f"{result['rouge_l']:.4f}"),
            ("mean generated length", f"{result['mean_generated_words']:.2f} words "
                                      f"({result['mean_generated_tokens']:.2f} tokens)")]
    for name, value in rows:
        print(f"{name:<22} {value}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print("wrote", a.json)


if __name__ == "__main__":
    main()
