#!/usr/bin/env python3
"""Regenerate Tests/Fixtures/prepare/: tiny inputs laid out exactly like the real releases, for the
prepare-script tests (Tests/ShardTests/PrepareScriptTests.swift).

    python3 Scripts/make_prepare_fixtures.py          # rewrites Tests/Fixtures/prepare

- scienceqa/: problems.json + pid_splits.json (6 problems: 4 train, 1 val, 1 test; 3 with images at
  images/<split>/<pid>/image.png), covering every subject, context (TXT/IMG/NO) and grade bucket.
- coco/: Karpathy-style dataset_coco.json with train, restval, val and test images (JPEG under
  images/train2014 and images/val2014).
- tokenizer/tokenizer.json: a ~400-token BPE with a SentencePiece-style Metaspace pre-tokenizer and
  <unk> <s> </s> <pad>, trained offline on the fixture texts with the `tokenizers` package.
"""
import json
import os
import shutil

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "prepare")

PROBLEMS = {
    "1": dict(question="Which animal has fur?", choices=["frog", "bear", "fish"], answer=1, hint="",
              image="image.png", subject="natural science", grade="grade3", split="train"),
    "2": dict(question="Which word is a noun?", choices=["run", "table"], answer=1,
              hint="A noun names a person, place or thing.", image=None, subject="language science",
              grade="grade8", split="train"),
    "3": dict(question="Which state is highlighted?", choices=["Ohio", "Texas", "Maine", "Utah"], answer=2,
              hint="Look at the map.", image="image.png", subject="social science", grade="grade11",
              split="train"),
    "4": dict(question="What is the boiling point of water at sea level?", choices=["50 C", "100 C", "150 C",
              "200 C", "250 C"], answer=1, hint="", image=None, subject="natural science", grade="grade6",
              split="train"),
    "5": dict(question="Which is heavier?", choices=["a feather", "a brick"], answer=1, hint="",
              image="image.png", subject="natural science", grade="grade2", split="val"),
    "6": dict(question="Which country is north of the USA?", choices=["Mexico", "Canada"], answer=1, hint="",
              image=None, subject="social science", grade="grade5", split="test"),
}
SPLITS = {"train": ["1", "2", "3", "4"], "val": ["5"], "test": ["6"]}

COCO = [
    ("train2014", "COCO_train2014_000000000009.jpg", "train", ["A plate of food with broccoli.", "Some food on a plate."]),
    ("train2014", "COCO_train2014_000000000025.jpg", "train", ["A giraffe eating leaves.", "A tall giraffe near a tree.",
                                                                 "The giraffe stands in the sun."]),
    ("val2014", "COCO_val2014_000000000042.jpg", "restval", ["A dog on a red couch.", "A brown dog sleeping."]),
    ("val2014", "COCO_val2014_000000000073.jpg", "val", ["A man riding a bike.", "A cyclist on a road.",
                                                           "A person on a bicycle."]),
    ("val2014", "COCO_val2014_000000000074.jpg", "test", ["A cat on a laptop.", "A cat sitting on a computer."]),
]


def picture(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), rng.integers(0, 256, (h, w))], -1)
    return Image.fromarray(img.astype(np.uint8), "RGB")


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    sqa = os.path.join(ROOT, "scienceqa")
    os.makedirs(sqa)
    for k, (pid, p) in enumerate(PROBLEMS.items()):
        p = dict(p, lecture="", solution="")
        PROBLEMS[pid] = p
        if p["image"]:
            d = os.path.join(sqa, "images", p["split"], pid)
            os.makedirs(d)
            picture(20 + 3 * k, 14 + 2 * k, k).save(os.path.join(d, "image.png"))
    json.dump(PROBLEMS, open(os.path.join(sqa, "problems.json"), "w"), indent=1)
    json.dump(SPLITS, open(os.path.join(sqa, "pid_splits.json"), "w"), indent=1)

    coco = os.path.join(ROOT, "coco")
    images = []
    for k, (fp, fn, split, caps) in enumerate(COCO):
        os.makedirs(os.path.join(coco, "images", fp), exist_ok=True)
        picture(24 + 4 * k, 16 + 3 * k, 100 + k).save(os.path.join(coco, "images", fp, fn), quality=80)
        images.append(dict(filepath=fp, filename=fn, split=split, imgid=k, cocoid=int(fn[-10:-4]),
                           sentences=[dict(raw=c, tokens=c.lower().rstrip(".").split(), imgid=k, sentid=10 * k + j)
                                      for j, c in enumerate(caps)]))
    json.dump(dict(images=images, dataset="coco"), open(os.path.join(coco, "dataset_coco.json"), "w"), indent=1)

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = []
    for p in PROBLEMS.values():
        corpus += [p["question"], p["hint"], " ".join(p["choices"]), "Context: N/A Question: Options: Answer:"]
    corpus += [c for _, _, _, caps in COCO for c in caps] + ["a picture of"]
    corpus += [f"The answer is {L}" for L in "ABCDE"] * 50
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                                        show_progress=False))
    os.makedirs(os.path.join(ROOT, "tokenizer"))
    tok.save(os.path.join(ROOT, "tokenizer", "tokenizer.json"))
    print(f"wrote {ROOT}")


if __name__ == "__main__":
    main()
