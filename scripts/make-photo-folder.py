#!/usr/bin/env python3
"""Write a folder of full-size product photos for the streaming benchmarks: Fashion-MNIST's
images upscaled (bicubic) to SIZE×SIZE, tinted (a random colour for the garment, another for the
background) and saved as JPEG under one sub-folder per class, as a shop's export would be.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install pillow
    scripts/fetch-datasets.sh fashion-mnist
    .venv-bench/bin/python scripts/make-photo-folder.py /tmp/photos --count 100000 --size 224

Photos cycle through Fashion-MNIST's 70,000 train and test images with a fresh tint each time,
so `--count` may exceed them. Deterministic (seeded). Uses every core.
"""
import argparse
import gzip
import os
import random
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

CLASSES = ["t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
SOURCE = Path("datasets/full/fashion-mnist")


def read_idx(path: Path, offset: int) -> bytes:
    with gzip.open(path) as f:
        return f.read()[offset:]


def load():
    images, labels = b"", b""
    for split in ["train", "t10k"]:
        images += read_idx(SOURCE / f"{split}-images-idx3-ubyte.gz", 16)
        labels += read_idx(SOURCE / f"{split}-labels-idx1-ubyte.gz", 8)
    return images, labels


def write(job):
    out, size, start, stop, images, labels = job
    for i in range(start, stop):
        src = i % len(labels)
        rng = random.Random(i)
        grey = Image.frombytes("L", (28, 28), images[src * 784 : (src + 1) * 784]).resize((size, size), Image.BICUBIC)
        garment = tuple(rng.randint(60, 255) for _ in range(3))
        background = tuple(rng.randint(0, 60) for _ in range(3))
        photo = Image.composite(Image.new("RGB", (size, size), garment), Image.new("RGB", (size, size), background), grey)
        photo.save(out / CLASSES[labels[src]] / f"{i:07d}.jpg", quality=90)
    return stop - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    images, labels = load()
    for name in CLASSES:
        (args.out / name).mkdir(parents=True, exist_ok=True)
    chunk = 2000
    jobs = [(args.out, args.size, s, min(s + chunk, args.count), images, labels) for s in range(0, args.count, chunk)]
    with Pool(os.cpu_count()) as pool:
        written = sum(pool.imap_unordered(write, jobs))
    print(f"{written} photos of {args.size}x{args.size} in {args.out}")


if __name__ == "__main__":
    main()
