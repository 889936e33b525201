"""The table of scripts/bench-tch-diagnostic.sh from its raw lines (BENCH_RAW keeps them):

    python3 scripts/bench_tch_table.py RAW THREADS

Each line of RAW: network, then the JSON of `vitrine bench --backend flex`, of `--backend tch` and
of bench_pytorch.py, tab-separated. tch/PyTorch is burn's overhead outside the kernels (the same
LibTorch kernels run on both sides); flex/tch is flex's kernels against LibTorch's under burn.
"""
import json, platform, statistics, sys

rows = {}
for line in open(sys.argv[1], encoding="utf-8"):
    name, *sides = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append([json.loads(side.strip().splitlines()[-1]) for side in sides])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"{cpu}, {sys.argv[2]} threads each; median of {len(next(iter(rows.values())))} interleaved rounds (min–max)\n")
print("| network | phase | flex samples/s | tch samples/s | PyTorch samples/s | tch / PyTorch | flex / tch | peak memory flex / tch / PyTorch |")
print("|---|---|---|---|---|---|---|---|")
fmt = lambda xs: f"{statistics.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
for name, runs in rows.items():
    for phase, key in [("train", "train_samples_per_sec"), ("inference", "inference_samples_per_sec")]:
        flex, tch, torch = ([run[i][key] for run in runs] for i in range(3))
        memory = " / ".join(f"{max(run[i].get('peak_memory_mib') or 0 for run in runs)}" for i in range(3))
        ratio = lambda a, b: f"{statistics.median(a) / statistics.median(b):.2f}×"
        print(f"| {name} | {phase} | {fmt(flex)} | {fmt(tch)} | {fmt(torch)} | {ratio(tch, torch)} | {ratio(flex, tch)} | {memory} MiB |")
