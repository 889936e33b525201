#!/usr/bin/env python3
"""Cut the MovieLens-100K sample shipped in datasets/movielens-sample out of the full files.

Keeps every interaction of the customers with the lowest IDs (real ratings, real timestamps),
the whole movie file, and those customers' rows of the user file:
    python3 scripts/make-movielens-sample.py datasets/full/ml-100k datasets/movielens-sample 300
"""
import sys
from pathlib import Path


def main(src, dst, users):
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    keep = {str(u) for u in range(1, users + 1)}
    for ext in ("inter", "user"):
        lines = (src / f"ml-100k.{ext}").read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [lines[0]] + [l for l in lines[1:] if l.split("\t", 1)[0] in keep]
        (dst / f"ml-100k.{ext}").write_text("".join(kept), encoding="utf-8")
        print(f"ml-100k.{ext}: {len(kept) - 1} rows")
    (dst / "ml-100k.item").write_bytes((src / "ml-100k.item").read_bytes())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 300)
