#!/usr/bin/env python3
"""Write datasets/shop-sample: the MovieLens sample dressed as a shop's export, to show that a
config alone reads one. Customer codes (C000196), SKUs (SKU-00242), ISO dates, a UTF-8 BOM (as
Excel writes), a product catalogue with `|`-separated categories, and a few junk rows a real
export has (an empty customer, a date nobody can read, a SKU missing from the catalogue, a row
exported twice):
    python3 scripts/make-shop-sample.py datasets/movielens-sample datasets/shop-sample
"""
import csv
import datetime
import sys
from pathlib import Path


def main(src, dst):
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    with open(src / "ml-100k.item", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    with open(dst / "products.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sku", "product", "categories", "year"])
        for item, title, year, genres in rows:
            w.writerow([f"SKU-{int(item):05d}", title, "|".join(genres.split()), year])
    with open(src / "ml-100k.inter", encoding="utf-8") as f:
        orders = list(csv.reader(f, delimiter="\t"))[1:]
    with open(dst / "orders.csv", "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer", "sku", "stars", "ordered_at"])
        for n, (user, item, rating, ts) in enumerate(orders):
            when = datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            row = [f"C{int(user):06d}", f"SKU-{int(item):05d}", rating, when]
            w.writerow(row)
            if n == 100:
                w.writerow(row)  # exported twice
            if n == 200:
                w.writerow(["", row[1], row[2], row[3]])
            if n == 300:
                w.writerow([row[0], row[1], row[2], "last Tuesday"])
            if n == 400:
                w.writerow([row[0], "SKU-99999", row[2], row[3]])
    print(f"wrote {len(orders)} orders (+4 junk rows) and {len(rows)} products to {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
