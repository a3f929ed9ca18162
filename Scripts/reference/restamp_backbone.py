#!/usr/bin/env python3
"""Rewrites the `backbone` attribute of a fixture directory's checkpoints after the fingerprint's definition
changes (Sources/Model/Safetensors/BackboneFingerprint.swift, mirrored by fingerprint.py) while the weights,
parameters and references stay as they are:

    pip install h5py
    python3 Scripts/reference/restamp_backbone.py [Tests/Fixtures/dehvf]

The directory holds vision/, language/ and checkpoint-*.h5 (as make_dehvf_fixtures.py writes it); every
checkpoint gets fingerprint.pair(vision, language), and nothing else in the files changes.
"""
import glob
import os
import sys

import h5py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fingerprint  # noqa: E402


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "Tests", "Fixtures", "dehvf"))
    backbone = fingerprint.pair(os.path.join(root, "vision"), os.path.join(root, "language"))
    for path in sorted(glob.glob(os.path.join(root, "checkpoint-*.h5"))):
        with h5py.File(path, "r+") as f:
            old = f.attrs["backbone"]
            f.attrs["backbone"] = backbone
        print(f"{os.path.basename(path)}: {'unchanged' if old == backbone else 'restamped'} ({backbone.split('|config:')[-1]})")


if __name__ == "__main__":
    main()
