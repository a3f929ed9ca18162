#!/usr/bin/env python3
"""Convert COCO captions (Karpathy split) into a DEHVF caption dataset file.

    python3 Scripts/prepare_coco.py --karpathy dataset_coco.json --images COCO_DIR --tokenizer MODEL_DIR \
        --split train --image-size 224 --out data/coco/train.h5

Input: Karpathy's dataset_coco.json ({"images": [{"filepath", "filename", "split", "sentences": [{"raw",
"tokens"}]}]}); images at COCO_DIR/<filepath>/<filename>. Split "train" takes Karpathy's train and
restval images.

Rows: for train, one row per caption: BOS, "a picture of", then the caption (its "raw" text, stripped)
and EOS when the tokenizer has one; labels are the caption (and EOS) tokens, -100 on the prompt.
For val/test, one row per image, labelled with its first caption (for a validation loss), and every
reference caption of the row kept in `references` [N]: a variable-length UTF-8 string dataset holding
one JSON list of strings per row, for caption metrics.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dehvf_prepare_common import TextCodec, load_image, pad_rows, write_dataset  # noqa: E402

PROMPT = "a picture of"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--karpathy", required=True, help="dataset_coco.json")
    ap.add_argument("--images", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--split", required=True, choices=["train", "val", "test"])
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    entries = json.load(open(a.karpathy))["images"]
    wanted = {"train", "restval"} if a.split == "train" else {a.split}
    entries = [e for e in entries if e["split"] in wanted]
    codec = TextCodec(a.tokenizer)
    prompt = codec.prompt(PROMPT)
    eos = [codec.eos] if codec.eos is not None else []

    image_cache, rows, image_of_row, references = {}, [], [], []
    for e in entries:
        path = os.path.join(a.images, e["filepath"], e["filename"])
        image_cache[path] = None
        captions = [s["raw"].strip() for s in e["sentences"]]
        if not captions:
            raise SystemExit(f"error: {path} has no captions")
        for c in (captions if a.split == "train" else captions[:1]):
            target = codec.continuation(PROMPT, c) + eos
            rows.append((prompt + target, [-100] * len(prompt) + target, len(prompt)))
            image_of_row.append(path)
        if a.split != "train":
            references.append(captions)

    n, size = len(rows), a.image_size
    for path in image_cache:
        image_cache[path] = load_image(path, size)
    images = np.stack([image_cache[p] for p in image_of_row]) if n else np.zeros((0, 3, size, size), np.uint8)
    input_ids, labels, lengths, _, cut = pad_rows(rows, codec.pad_id, a.max_tokens)
    if cut:
        # Cutting would eat into the prompt or the caption: refuse rather than train on a clipped row.
        raise SystemExit(f"error: {cut} rows exceed --max-tokens {a.max_tokens}; raise it")
    write_dataset(a.out, "caption", codec.pad_id, dict(
        images=images, has_image=np.ones(n, np.uint8), input_ids=input_ids, lengths=lengths, labels=labels),
        references=references if a.split != "train" else None)
    print(f"{a.out}: {n} rows from {len(entries)} images, T={input_ids.shape[1]}")


if __name__ == "__main__":
    main()
