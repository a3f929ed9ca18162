"""Shared pieces of the DEHVF prepare scripts: tokenizer conventions, image preprocessing, HDF5 output.

The dataset format is DESIGN.md section 5. Conventions fixed here (and documented in each script):
- Tokenizer: a Hugging Face `tokenizer.json`, loaded with the `tokenizers` package. Text is encoded
  without the tokenizer's own template; the BOS token is prepended when the vocabulary has one
  (`<s>`, `<|begin_of_text|>`, `<bos>`, `<|startoftext|>`). pad_id is the tokenizer's padding id, else
  `<pad>`, else 0.
- A target continuation (answer letter, caption) is tokenized as the tokenizer sees it after the
  prompt: encode(prompt + " " + target) and take what follows the prompt's tokens, so a SentencePiece
  tokenizer gives "▁A" for " A" after "is", exactly as at inference.
- Images: RGB, shorter side resized to N with bicubic (Pillow), centre crop N x N, uint8 [3, N, N];
  CLIP mean/std stored as attributes, normalisation happens at load.
"""
import contextlib
import json
import os

import numpy as np

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")
EOS_NAMES = ("</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>")


class TextCodec:
    """The tokenizer plus this project's BOS/pad/continuation conventions."""

    def __init__(self, tokenizer_dir):
        from tokenizers import Tokenizer

        path = tokenizer_dir if tokenizer_dir.endswith(".json") else os.path.join(tokenizer_dir, "tokenizer.json")
        if not os.path.exists(path):
            raise SystemExit(f"error: no tokenizer.json at {path}: pass --tokenizer the model's directory")
        self.tok = Tokenizer.from_file(path)
        self.bos = self._first_id(BOS_NAMES)
        self.eos = self._first_id(EOS_NAMES)
        pad = self.tok.padding["pad_id"] if self.tok.padding else self._first_id(("<pad>",))
        self.pad_id = int(pad) if pad is not None else 0

    def _first_id(self, names):
        for n in names:
            i = self.tok.token_to_id(n)
            if i is not None:
                return int(i)
        return None

    def encode(self, text):
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def prompt(self, text):
        """Token ids of a prompt, BOS first when the tokenizer has one."""
        return ([self.bos] if self.bos is not None else []) + self.encode(text)

    def continuation(self, prompt_text, target):
        """Ids of ' ' + target as tokenized right after prompt_text."""
        head = self.encode(prompt_text)
        full = self.encode(prompt_text + " " + target)
        if full[: len(head)] == head and len(full) > len(head):
            return full[len(head):]
        return self.encode(" " + target)


def load_image(path, size):
    """RGB uint8 [3, size, size]: shorter side to `size` (bicubic), centre crop."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, np.uint8).transpose(2, 0, 1).copy()


def pad_rows(rows, pad_id, max_tokens):
    """input_ids and labels [N, T] from per-row (ids, labels); T = max_tokens or the longest row.
    Rows longer than T lose prompt tokens from the left (after BOS); returns the count cut."""
    longest = max((len(r[0]) for r in rows), default=1)
    t = max_tokens or max(1, longest)
    n = len(rows)
    ids = np.full((n, t), pad_id, np.int32)
    labels = np.full((n, t), -100, np.int32)
    lengths = np.zeros(n, np.int32)
    shift = np.zeros(n, np.int32)
    cut = 0
    for i, (row_ids, row_labels, keep_first) in enumerate(rows):
        if len(row_ids) > t:
            drop = len(row_ids) - t
            row_ids = row_ids[:keep_first] + row_ids[keep_first + drop:]
            row_labels = row_labels[:keep_first] + row_labels[keep_first + drop:]
            shift[i] = drop
            cut += 1
        ids[i, : len(row_ids)] = row_ids
        labels[i, : len(row_labels)] = row_labels
        lengths[i] = len(row_ids)
    return ids, labels, lengths, shift, cut


def rows_per_chunk(row_bytes, n, rows=None):
    """Rows per chunk along N: about 64 KiB a chunk (one image per chunk at 224 px), at most 1024 rows, as the
    Swift DatasetWriter does; `rows` overrides the 64 KiB rule."""
    return max(1, min(1024, rows or (64 << 10) // max(1, row_bytes), n))


@contextlib.contextmanager
def dataset_file(out, task, pad_id):
    """An open h5py file with the DESIGN section 5 root attributes, written under `out`.tmp and renamed to
    `out` when the block ends without an error (removed otherwise), so `out` is never half written."""
    import h5py

    tmp = out + ".tmp"
    try:
        # The HDF5 1.10 format checksums all metadata (as the Swift writer does); Fletcher-32 on every chunk.
        # No chunk cache: columns are written in blocks of whole rows, and h5py's default cache (1 MiB a
        # dataset) was measured holding about 17 MB once 50,000 rows were written; without it a block's
        # chunks go straight to the file (an edge chunk shared by two blocks is read back once).
        with h5py.File(tmp, "w", libver=("v110", "v110"), rdcc_nbytes=0) as f:
            f.attrs["format"] = "dehvf-dataset"
            f.attrs["version"] = 1
            f.attrs["task"] = task
            f.attrs["pad_id"] = int(pad_id)
            f.attrs["image_mean"] = CLIP_MEAN
            f.attrs["image_std"] = CLIP_STD
            yield f
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, out)


def create_column(f, name, shape, dtype, rows=None):
    """A pre-sized dataset chunked along N with Fletcher-32 (contiguous when N is 0: HDF5 has no empty
    chunk), to be filled a block of rows at a time, so no caller needs the whole column in memory."""
    dtype = np.dtype(dtype)
    n = shape[0]
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    chunks = (rows_per_chunk(row_bytes, n, rows),) + tuple(shape[1:]) if n else None
    return f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, fletcher32=chunks is not None)


def create_references(f, n):
    """`references` [N], to be filled with one JSON list of strings per row: variable-length UTF-8 strings.
    HDF5 allows no filter on variable-length data, so this one dataset is contiguous and has no Fletcher-32
    (as the Swift writer's)."""
    import h5py

    return f.create_dataset("references", shape=(n,), dtype=h5py.string_dtype())


def write_dataset(out, task, pad_id, arrays, meta=None, references=None, chunk_rows=None):
    """Writes the DESIGN section 5 layout from whole in-memory arrays, every dataset chunked along N."""
    with dataset_file(out, task, pad_id) as f:
        for name, a in arrays.items():
            if name == "choice_token_ids":
                f.create_dataset(name, data=a)
            else:
                create_column(f, name, a.shape, a.dtype, chunk_rows)[...] = a
        for name, a in (meta or {}).items():
            create_column(f, "meta/" + name, a.shape, a.dtype, chunk_rows)[...] = a
        if references is not None:
            column = create_references(f, len(references))
            if references:
                column[...] = [json.dumps(r, ensure_ascii=False) for r in references]
