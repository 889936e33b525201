"""Prints the median (min-max) of each row over the raw runs: python3 table.py raw-run-*.jsonl"""
import json
import statistics
import sys

runs = [[json.loads(line) for line in open(path)] for path in sys.argv[1:]]
print("| model | backend | training samples/s | inference samples/s | peak memory |")
print("|---|---|---|---|---|")
for rows in zip(*runs):
    first = rows[0]
    name = first["model"] + (f", {first['seq_len']} tokens" if first.get("seq_len", 64) != 64 else "")
    cells = []
    for key in ("train_samples_per_sec", "inference_samples_per_sec"):
        values = [r[key] for r in rows]
        digits = 1 if max(values) < 100 else 0
        fmt = lambda v: f"{v:,.{digits}f}"
        cells.append(f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})")
    memory = statistics.median(r["peak_memory_mib"] for r in rows)
    print(f"| `{name}` | {first['backend']} | {cells[0]} | {cells[1]} | {memory:.0f} MiB |")
