"""Prints each run's row for the README's accuracy tables: python3 summary.py RUNS_FOLDER"""
import json
import statistics
import sys
from pathlib import Path

for report in sorted(Path(sys.argv[1]).glob("*/report.json")):
    r = json.loads(report.read_text())
    epochs, test = r.get("epochs", []), r.get("test") or {}
    if "accuracy" not in test:  # not a classifier's run
        continue
    seconds = [e["seconds"] for e in epochs]
    rate = statistics.median(e["samples_per_sec"] for e in epochs)
    auroc = f"{test['auroc']:.4f}" if test.get("auroc") is not None else "–"
    baseline = "; ".join(f"{name}: {value:.2%}" for name, value in r.get("held_out", []))
    print(f"{report.parent.name}: {len(epochs)} epochs, test {test['accuracy']:.2%}, macro-F1 "
          f"{test['macro_f1']:.4f}, AUROC {auroc}, epoch {min(seconds):.1f}–{max(seconds):.1f} s, "
          f"{rate:,.0f} samples/s (median), selected by {r.get('selected_by')}; {baseline}")
