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

Images are stored once each, `images` [I, 3, H, W] in the order of their first row, and `image_index` [N]
maps every row to its image (DESIGN.md section 5): the five caption rows of a training image share it.

Memory: the script streams. The JSON is parsed one entry at a time, the token rows are kept as one flat
int32 array (a few tens of bytes a row), and images are decoded, resized and written IMAGE_BLOCK at a time
into pre-sized chunked datasets, so peak memory does not grow with the number of images (README, Data).
"""
import argparse
import array
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dehvf_prepare_common import TextCodec, create_column, dataset_file, load_image, write_references  # noqa: E402

PROMPT = "a picture of"
IMAGE_BLOCK = 32    # images decoded and written at a time: 4.8 MB at 224 px, 10.8 MB at 336 px
ROW_BLOCK = 4096    # token rows padded and written at a time


class JSONArrayStream:
    """The elements of one array member of a top-level JSON object (`{"images": [...], ...}`), parsed one
    at a time from a file read in CHUNK-character pieces, so the whole document is never in memory
    (Karpathy's dataset_coco.json is 140 MB of text and over 1 GB as Python objects)."""

    CHUNK = 1 << 20

    def __init__(self, path, key):
        self.path, self.key = path, key
        self.decoder = json.JSONDecoder()
        self.buf, self.pos, self.eof = "", 0, False

    def _fill(self):
        """Appends the next piece of the file (dropping what has been parsed); False at the end."""
        data = self.file.read(self.CHUNK)
        if not data:
            self.eof = True
            return False
        self.buf, self.pos = self.buf[self.pos:] + data, 0
        return True

    def _peek(self):
        """The next non-blank character (not consumed), or '' at the end of the file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos:self.pos + 1]

    def _expect(self, chars):
        c = self._peek()
        if not c or c not in chars:
            raise SystemExit(f"error: {self.path} is not the JSON expected: expected one of {' '.join(chars)}, "
                             f"found {repr(c) if c else 'the end of the file'}")
        self.pos += 1
        return c

    def _value(self):
        """The next complete JSON value. A value that ends exactly where the buffer does may be cut short
        (a number), so it is parsed again with more text unless the file has ended."""
        self._peek()
        while True:
            try:
                v, end = self.decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    self.pos = end
                    return v
            except json.JSONDecodeError as e:
                if self.eof:
                    raise SystemExit(f"error: {self.path} is not valid JSON: {e}")
            self._fill()

    def __iter__(self):
        found = False
        with open(self.path, encoding="utf-8") as self.file:
            self._expect("{")
            if self._peek() == "}":
                self.pos += 1
            else:
                while True:
                    key = self._value()
                    self._expect(":")
                    if key == self.key:
                        found = True
                        self._expect("[")
                        if self._peek() == "]":
                            self.pos += 1
                        else:
                            while True:
                                yield self._value()
                                if self._expect(",]") == "]":
                                    break
                    else:
                        self._value()
                    if self._expect(",}") == "}":
                        break
        if not found:
            raise SystemExit(f"error: {self.path} has no {self.key!r} array: is it Karpathy's dataset_coco.json?")


def field(entry, name, index):
    try:
        return entry[name]
    except (KeyError, TypeError):
        raise SystemExit(f"error: entry {index} of \"images\" has no {name!r}: is it Karpathy's dataset_coco.json?")


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

    wanted = {"train", "restval"} if a.split == "train" else {a.split}
    codec = TextCodec(a.tokenizer)
    prompt = codec.prompt(PROMPT)
    eos = [codec.eos] if codec.eos is not None else []

    # Pass 1, over the JSON: the rows' caption tokens (flat), each row's image and the images' paths.
    targets, target_start = array.array("i"), array.array("q", [0])
    image_of_row, paths, image_id, references = array.array("i"), [], {}, []
    entries = 0
    for k, e in enumerate(JSONArrayStream(a.karpathy, "images")):
        if field(e, "split", k) not in wanted:
            continue
        entries += 1
        path = os.path.join(a.images, field(e, "filepath", k), field(e, "filename", k))
        captions = [s["raw"].strip() for s in field(e, "sentences", k)]
        if not captions:
            raise SystemExit(f"error: {path} has no captions")
        if path not in image_id:
            image_id[path] = len(paths)
            paths.append(path)
        for c in (captions if a.split == "train" else captions[:1]):
            targets.extend(codec.continuation(PROMPT, c) + eos)
            target_start.append(len(targets))
            image_of_row.append(image_id[path])
        if a.split != "train":
            references.append(captions)
    del image_id

    n, size, p = len(image_of_row), a.image_size, len(prompt)
    starts = np.frombuffer(target_start, np.int64)
    lengths = (p + np.diff(starts)).astype(np.int32)
    longest = int(lengths.max()) if n else 1
    t = a.max_tokens or max(1, longest)
    if longest > t:
        # Cutting would eat into the prompt or the caption: refuse rather than train on a clipped row.
        raise SystemExit(f"error: {int((lengths > t).sum())} rows exceed --max-tokens {a.max_tokens}; raise it")
    tokens = np.frombuffer(targets, np.int32)

    # Pass 2: every column pre-sized, then filled a block at a time.
    with dataset_file(a.out, "caption", codec.pad_id) as f:
        images = create_column(f, "images", (len(paths), 3, size, size), np.uint8)
        for lo in range(0, len(paths), IMAGE_BLOCK):
            block = paths[lo:lo + IMAGE_BLOCK]
            images[lo:lo + len(block)] = np.stack([load_image(path, size) for path in block])
        create_column(f, "image_index", (n,), np.int32)[...] = np.frombuffer(image_of_row, np.int32)
        create_column(f, "has_image", (n,), np.uint8)[...] = np.ones(n, np.uint8)
        create_column(f, "lengths", (n,), np.int32)[...] = lengths
        input_ids = create_column(f, "input_ids", (n, t), np.int32)
        labels = create_column(f, "labels", (n, t), np.int32)
        for lo in range(0, n, ROW_BLOCK):
            hi = min(n, lo + ROW_BLOCK)
            ids = np.full((hi - lo, t), codec.pad_id, np.int32)
            labs = np.full((hi - lo, t), -100, np.int32)
            ids[:, :p] = prompt
            for r in range(lo, hi):
                target = tokens[starts[r]:starts[r + 1]]
                ids[r - lo, p:p + len(target)] = target
                labs[r - lo, p:p + len(target)] = target
            input_ids[lo:hi] = ids
            labels[lo:hi] = labs
        if a.split != "train":
            write_references(f, references)
    print(f"{a.out}: {n} rows from {entries} entries, {len(paths)} images, T={t}")


if __name__ == "__main__":
    main()
