#!/usr/bin/env python3
"""Fabricate a Karpathy-style COCO release of any size, to measure Scripts/prepare_coco.py (README, Data).

    python3 Scripts/fabricate_karpathy.py --out /tmp/coco-20k --images 20000
    /usr/bin/time -v python3 Scripts/prepare_coco.py --karpathy /tmp/coco-20k/dataset_coco.json \
        --images /tmp/coco-20k --tokenizer Tests/Fixtures/prepare/tokenizer --split train --image-size 224 \
        --out /tmp/coco-20k/train.h5

Writes OUT/dataset_coco.json ({"images": [...], "dataset": "coco"}, with "raw" and "tokens" per sentence as
Karpathy's file has them) and one JPEG per image under OUT/train2014 or OUT/val2014, at COCO's usual sizes
(640x480, 480x640, 640x427, 500x375) with smooth random content (about 20 KB each). --images counts the
training images (Karpathy "train" and "restval", 3:1); --held-out more go to each of "val" and "test".
Every image has --captions random captions. The output is scratch data: do not commit it.
"""
import argparse
import json
import os

import numpy as np
from PIL import Image

SIZES = [(640, 480), (480, 640), (640, 427), (500, 375)]
WORDS = ("a man woman dog cat bus plate of food with broccoli giraffe tree near the sun on red couch brown "
         "sleeping riding bike road person bicycle laptop computer sitting tall eating leaves some stands in "
         "street wet two play snow green old clock tower").split()


def picture(rng, w, h):
    """A smooth random RGB picture: coarse noise upscaled, so it compresses like a photograph, not like noise."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    return coarse.resize((w, h), Image.BILINEAR)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, required=True, help="training images (train + restval)")
    ap.add_argument("--held-out", type=int, default=0, help="images in each of val and test")
    ap.add_argument("--captions", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    splits = (["train", "train", "train", "restval"] * a.images)[:a.images] + ["val"] * a.held_out + ["test"] * a.held_out
    entries = []
    for k, split in enumerate(splits):
        folder = "train2014" if split == "train" else "val2014"
        name = f"COCO_{folder}_{k:012d}.jpg"
        os.makedirs(os.path.join(a.out, folder), exist_ok=True)
        picture(rng, *SIZES[k % len(SIZES)]).save(os.path.join(a.out, folder, name), quality=85)
        sentences = []
        for j in range(a.captions):
            words = list(rng.choice(WORDS, int(rng.integers(6, 14))))
            raw = " ".join(words).capitalize() + "."
            sentences.append(dict(raw=raw, tokens=words, imgid=k, sentid=a.captions * k + j))
        entries.append(dict(filepath=folder, filename=name, split=split, imgid=k, cocoid=k, sentences=sentences))
    with open(os.path.join(a.out, "dataset_coco.json"), "w") as f:
        json.dump(dict(images=entries, dataset="coco"), f)
    print(f"{a.out}: {len(entries)} images ({a.images} train/restval, {a.held_out} each val/test), "
          f"{a.captions} captions each")


if __name__ == "__main__":
    main()
