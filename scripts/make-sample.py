#!/usr/bin/env python3
"""Cut the small Fashion-MNIST sample shipped in datasets/ out of the full IDX files.

Takes the first N images of each split (the files are already shuffled), so the sample is
real Zalando product photos, reproducible from the Debian package:
    python3 scripts/make-sample.py /usr/share/datasets/fashion-mnist datasets/fashion-mnist-sample
"""
import gzip
import struct
import sys
from pathlib import Path

SPLITS = {"train": 3000, "t10k": 1000}


def read(path):
    data = gzip.open(path).read()
    rank = data[3]
    dims = struct.unpack(">" + "I" * rank, data[4 : 4 + 4 * rank])
    return dims, data[4 + 4 * rank :]


def write(path, dims, payload):
    header = bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    # mtime=0 keeps the files byte-identical from run to run.
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + payload)


def main(src, dst):
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for split, n in SPLITS.items():
        (count, rows, cols), pixels = read(src / f"{split}-images-idx3-ubyte.gz")
        (_,), labels = read(src / f"{split}-labels-idx1-ubyte.gz")
        n = min(n, count)
        write(dst / f"{split}-images-idx3-ubyte.gz", (n, rows, cols), pixels[: n * rows * cols])
        write(dst / f"{split}-labels-idx1-ubyte.gz", (n,), labels[:n])
        print(f"{split}: {n} images, class counts {[labels[:n].count(c) for c in range(10)]}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
