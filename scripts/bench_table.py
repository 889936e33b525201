"""The table of scripts/bench-vs-pytorch.sh from its raw lines (BENCH_RAW keeps them):

    python3 scripts/bench_table.py RAW THREADS BACKEND

Each line of RAW: network, `vitrine bench --single` output, bench_pytorch.py output, tab-separated.
"""
import json, statistics, sys, platform
rows = {}
for line in open(sys.argv[1], encoding="utf-8"):
    name, v, p = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((json.loads(v.strip().splitlines()[-1]), json.loads(p)))
backend = sys.argv[3]
first_runs = next(iter(rows.values()))
vitrine, pytorch = first_runs[0]
gpu = pytorch.get("peak_gpu_memory_mib") is not None
if gpu:
    where = f"{vitrine['device']} against {pytorch['backend']}"
else:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    where = f"{cpu}, {sys.argv[2]} threads each"
print(f"{where}; median of {len(first_runs)} interleaved rounds (min–max)\n")
memory_head = "peak host memory Vitrine / PyTorch (PyTorch's GPU memory)" if gpu else "peak memory Vitrine / PyTorch"
print(f"| network | phase | Vitrine ({backend}) samples/s | PyTorch samples/s | ratio | {memory_head} |")
print("|---|---|---|---|---|---|")
fmt = lambda xs: f"{statistics.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
for name, runs in rows.items():
    phases = [("train", "train_samples_per_sec"), ("inference", "inference_samples_per_sec")]
    if "batch 1" in name:
        phases = phases[1:]
    for phase, key in phases:
        v = [r[0][key] for r in runs]
        p = [r[1][key] for r in runs]
        memory = f"{max(r[0].get('peak_memory_mib') or 0 for r in runs)} / {max(r[1]['peak_memory_mib'] for r in runs)} MiB"
        if gpu:
            memory += f" ({max(r[1]['peak_gpu_memory_mib'] for r in runs)} MiB)"
        print(f"| {name} | {phase} | {fmt(v)} | {fmt(p)} | {statistics.median(v) / statistics.median(p):.2f}× | {memory} |")
