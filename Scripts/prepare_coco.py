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

Memory: the script streams, in two passes over the JSON, which is parsed one entry at a time. The first
counts the rows, finds the longest and gives each image an id; the second tokenizes again and fills
pre-sized chunked datasets, IMAGE_BLOCK images (decoded and resized) or ROW_BLOCK rows at a time. What is
kept throughout is one path -> id entry per image, so peak memory barely grows with the number of images
(README, Data). The JSON must not change between the passes.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dehvf_prepare_common import TextCodec, create_column, create_references, dataset_file, load_image  # noqa: E402

PROMPT = "a picture of"
IMAGE_BLOCK = 32    # images decoded and written at a time: 4.8 MB at 224 px, 10.8 MB at 336 px
ROW_BLOCK = 1024    # token rows padded and written at a time


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


def karpathy_rows(karpathy, images_dir, split, codec):
    """Yields each row in file order: (image path, the caption's target ids, every caption of its entry for
    val/test, else None)."""
    wanted = {"train", "restval"} if split == "train" else {split}
    eos = [codec.eos] if codec.eos is not None else []
    for k, e in enumerate(JSONArrayStream(karpathy, "images")):
        if field(e, "split", k) not in wanted:
            continue
        path = os.path.join(images_dir, field(e, "filepath", k), field(e, "filename", k))
        captions = [s["raw"].strip() for s in field(e, "sentences", k)]
        if not captions:
            raise SystemExit(f"error: {path} has no captions")
        for c in (captions if split == "train" else captions[:1]):
            yield path, codec.continuation(PROMPT, c) + eos, captions if split != "train" else None


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

    codec = TextCodec(a.tokenizer)
    prompt = codec.prompt(PROMPT)
    p, size = len(prompt), a.image_size

    def rows():
        return karpathy_rows(a.karpathy, a.images, a.split, codec)

    # Pass 1: N, the longest row, and an id per image (in the order of its first row). Nothing per row is
    # kept: pass 2 reads and tokenizes the captions again (a few seconds against the images' minutes).
    n, longest, too_long, image_id = 0, 1, 0, {}
    for path, target, _ in rows():
        n += 1
        longest = max(longest, p + len(target))
        if a.max_tokens and p + len(target) > a.max_tokens:
            too_long += 1
        image_id.setdefault(path, len(image_id))
    if too_long:
        # Cutting would eat into the prompt or the caption: refuse rather than train on a clipped row.
        raise SystemExit(f"error: {too_long} rows exceed --max-tokens {a.max_tokens}; raise it")
    t = a.max_tokens or longest

    # Pass 2: every column pre-sized, then filled a block of images or rows at a time.
    with dataset_file(a.out, "caption", codec.pad_id) as f:
        images = create_column(f, "images", (len(image_id), 3, size, size), np.uint8)
        columns = dict(image_index=create_column(f, "image_index", (n,), np.int32),
                       has_image=create_column(f, "has_image", (n,), np.uint8),
                       lengths=create_column(f, "lengths", (n,), np.int32),
                       input_ids=create_column(f, "input_ids", (n, t), np.int32),
                       labels=create_column(f, "labels", (n, t), np.int32))
        references = create_references(f, n) if a.split != "train" else None
        pending_images, pending_rows = [], []
        written_images = written_rows = 0

        def flush_images():
            nonlocal written_images
            if pending_images:
                try:
                    block = np.stack([load_image(path, size) for path in pending_images])
                except OSError as e:
                    raise SystemExit(f"error: cannot read an image ({e}); is --images the COCO directory?")
                images[written_images:written_images + len(block)] = block
                written_images += len(block)
                pending_images.clear()

        def flush_rows():
            nonlocal written_rows
            if not pending_rows:
                return
            lo, hi = written_rows, written_rows + len(pending_rows)
            ids = np.full((hi - lo, t), codec.pad_id, np.int32)
            labs = np.full((hi - lo, t), -100, np.int32)
            ids[:, :p] = prompt
            for r, (_, target, _) in enumerate(pending_rows):
                ids[r, p:p + len(target)] = target
                labs[r, p:p + len(target)] = target
            columns["image_index"][lo:hi] = np.array([i for i, _, _ in pending_rows], np.int32)
            columns["has_image"][lo:hi] = np.ones(hi - lo, np.uint8)
            columns["lengths"][lo:hi] = np.array([p + len(target) for _, target, _ in pending_rows], np.int32)
            columns["input_ids"][lo:hi] = ids
            columns["labels"][lo:hi] = labs
            if references is not None:
                references[lo:hi] = [json.dumps(c, ensure_ascii=False) for _, _, c in pending_rows]
            written_rows = hi
            pending_rows.clear()

        for path, target, captions in rows():
            i = image_id.get(path, -1)
            if i < 0 or i > written_images + len(pending_images) or written_rows + len(pending_rows) >= n:
                raise SystemExit(f"error: {a.karpathy} changed while it was read; run again")
            if i == written_images + len(pending_images):
                pending_images.append(path)
                if len(pending_images) == IMAGE_BLOCK:
                    flush_images()
            pending_rows.append((i, target, captions))
            if len(pending_rows) == ROW_BLOCK:
                flush_rows()
        flush_images()
        flush_rows()
        if written_rows != n or written_images != len(image_id):
            raise SystemExit(f"error: {a.karpathy} changed while it was read; run again")
    print(f"{a.out}: {n} rows, {len(image_id)} images, T={t}")


if __name__ == "__main__":
    main()
