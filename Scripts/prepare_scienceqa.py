#!/usr/bin/env python3
"""Convert ScienceQA (its own release layout) into a DEHVF multiple-choice dataset file.

    python3 Scripts/prepare_scienceqa.py --root DIR --tokenizer MODEL_DIR --split train \
        --image-size 224 --out data/scienceqa/train.h5

Input layout (as released): DIR/problems.json (pid -> {question, choices, answer, hint, image, subject,
grade, split, ...}), DIR/pid_splits.json ({"train": [pids], "val": ..., "test": ...}) and
DIR/images/<split>/<pid>/image.png. Rows follow the order of pid_splits.json.

Prompt (MemVP / LaVIN "QCM-A"), with an empty hint written as "N/A" as LaVIN does:
    Context: {hint}\\nQuestion: {question}\\nOptions: (A) {c0} (B) {c1} ...\\nAnswer: The answer is
The target is the answer letter as the tokenizer encodes " A" right after "is" (SentencePiece: "▁A");
labels hold those token ids at their positions and -100 elsewhere. answer_position is the last prompt
token (its logits predict the letter), so labels[answer_position + 1] is the letter's first token.
choice_token_ids[k] is the first token of letter k (A..E) encoded the same way, so C = 5.
meta/subject: 0 natural, 1 social, 2 language science. meta/context: 0 TXT (hint text, no image),
1 IMG (has an image), 2 NO (neither). meta/grade: 0 grades 1-6, 1 grades 7-12.
Rows longer than --max-tokens (default: the longest row) lose prompt tokens from the left after BOS.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dehvf_prepare_common import TextCodec, load_image, pad_rows, write_dataset  # noqa: E402

LETTERS = "ABCDE"
SUBJECTS = {"natural science": 0, "social science": 1, "language science": 2}
ANSWER_PREFIX = "Answer: The answer is"


def prompt_text(p):
    hint = (p.get("hint") or "").strip() or "N/A"
    options = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(p["choices"]))
    return f"Context: {hint}\nQuestion: {p['question']}\nOptions: {options}\n{ANSWER_PREFIX}"


def grade_bucket(grade):
    try:
        g = int(str(grade).replace("grade", ""))
    except ValueError:
        raise SystemExit(f"error: unknown grade {grade!r} (expected grade1..grade12)")
    return 0 if g <= 6 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--tokenizer", required=True, help="directory holding tokenizer.json (or the file)")
    ap.add_argument("--split", required=True, choices=["train", "val", "test", "minival", "minitrain", "trainval"])
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    problems = json.load(open(os.path.join(a.root, "problems.json")))
    splits = json.load(open(os.path.join(a.root, "pid_splits.json")))
    if a.split not in splits:
        raise SystemExit(f"error: split {a.split!r} not in pid_splits.json (has {sorted(splits)})")
    pids = [str(p) for p in splits[a.split]]
    codec = TextCodec(a.tokenizer)
    choice_ids = [codec.continuation(ANSWER_PREFIX, L)[0] for L in LETTERS]
    if len(set(choice_ids)) != len(LETTERS):
        raise SystemExit(f"error: the tokenizer gives letters A..E non-distinct first tokens {choice_ids}")

    n, size = len(pids), a.image_size
    images = np.zeros((n, 3, size, size), np.uint8)
    has_image = np.zeros(n, np.uint8)
    answer = np.zeros(n, np.int32)
    num_choices = np.zeros(n, np.int32)
    prompt_last = np.zeros(n, np.int32)
    subject = np.zeros(n, np.uint8)
    context = np.zeros(n, np.uint8)
    grade = np.zeros(n, np.uint8)
    rows = []
    for i, pid in enumerate(pids):
        p = problems[pid]
        k = len(p["choices"])
        if not 1 <= k <= len(LETTERS) or not 0 <= int(p["answer"]) < k:
            raise SystemExit(f"error: problem {pid}: {k} choices, answer {p['answer']}")
        text = prompt_text(p)
        ids = codec.prompt(text)
        target = codec.continuation(text, LETTERS[int(p["answer"])])
        rows.append((ids + target, [-100] * len(ids) + target, 1 if codec.bos is not None else 0))
        prompt_last[i] = len(ids) - 1
        answer[i], num_choices[i] = int(p["answer"]), k
        if p.get("image"):
            path = os.path.join(a.root, "images", p.get("split", a.split), pid, p["image"])
            if not os.path.exists(path):
                path = os.path.join(a.root, "images", a.split, pid, p["image"])
            images[i] = load_image(path, size)
            has_image[i] = 1
        subject[i] = SUBJECTS[p["subject"]]
        context[i] = 1 if has_image[i] else (0 if (p.get("hint") or "").strip() else 2)
        grade[i] = grade_bucket(p["grade"])

    input_ids, labels, lengths, shift, cut = pad_rows(rows, codec.pad_id, a.max_tokens)
    answer_position = (prompt_last - shift).astype(np.int32)
    if cut:
        print(f"warning: {cut} rows were longer than {input_ids.shape[1]} tokens and lost prompt tokens", file=sys.stderr)
    write_dataset(a.out, "multiple-choice", codec.pad_id, dict(
        images=images, has_image=has_image, input_ids=input_ids, lengths=lengths, labels=labels, answer=answer,
        num_choices=num_choices, answer_position=answer_position,
        choice_token_ids=np.array(choice_ids, np.int32)), meta=dict(subject=subject, context=context, grade=grade))
    print(f"{a.out}: {n} rows, T={input_ids.shape[1]}, {int(has_image.sum())} with images")


if __name__ == "__main__":
    main()
