#!/usr/bin/env python3
"""Generate a large synthetic interactions file for `vitrine bench` of the recommenders:
USERS customers, ITEMS items, COUNT distinct (customer, item) interactions, both customer activity
and item popularity Zipf-like (the k-th most popular drawn with probability ∝ 1/k), as a shop's
catalogue looks. Columns user_id,item_id (RecBole-style names, what `vitrine bench` reads).

    python3 scripts/make-catalogue.py datasets/full/catalogue-20m.csv 1000000 100000 20000000

Pure Python (no numpy): about a minute per 10 M interactions. Seeded: the same file each time.
"""
import bisect
import itertools
import random
import sys


def cumulative(n):
    weights = [1.0 / k for k in range(1, n + 1)]
    total = sum(weights)
    return list(itertools.accumulate(w / total for w in weights))


def main(out, users, items, count, seed=42):
    rng = random.Random(seed)
    user_cdf, item_cdf = cumulative(users), cumulative(items)
    seen = set()
    chunk = 1_000_000
    with open(out, "w", encoding="utf-8") as f:
        f.write("user_id,item_id\n")
        written = 0
        while written < count:
            want = min(chunk, count - written)
            us = [bisect.bisect_left(user_cdf, r) for r in (rng.random() for _ in range(want))]
            its = [bisect.bisect_left(item_cdf, r) for r in (rng.random() for _ in range(want))]
            lines = []
            for u, i in zip(us, its):
                key = u * items + i
                if key not in seen:
                    seen.add(key)
                    lines.append(f"U{u},I{i}\n")
            f.writelines(lines[: count - written])
            written += min(len(lines), count - written)
    print(f"wrote {written} interactions of {users} customers and {items} items to {out}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
