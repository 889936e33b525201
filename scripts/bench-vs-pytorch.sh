#!/usr/bin/env bash
# Vitrine against PyTorch on the same machine, in one go: the reference networks of
# reference-models.md at the same shapes, batch sizes and optimizers, `vitrine bench` and
# scripts/bench_pytorch.py interleaved (round after round, so a busy machine slows both alike),
# both pinned to the same number of threads. Prints one Markdown table: network, phase, samples/s
# of each (median of the rounds, min–max), their ratio, and each process's peak memory.
#
#   scripts/bench-vs-pytorch.sh [ROUNDS] [THREADS] [ONLY]   # defaults: 3 rounds, 2 threads, every network
#
# ONLY: measure just the networks whose names contain it (e.g. `bpr-mf`).
#
# Creates a virtualenv with PyTorch from PyPI at $BENCH_VENV (default .venv-bench) the first time;
# builds Vitrine in release mode when target/release/vitrine is missing. Inputs are random tensors
# of the real shapes on both sides (throughput does not depend on the pixel values).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}" threads="${2:-2}" only="${3:-}"
venv="${BENCH_VENV:-.venv-bench}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch numpy
fi
"$venv/bin/python" -c 'import torchvision' 2>/dev/null || "$venv/bin/pip" install --quiet torchvision
[ -x target/release/vitrine ] || cargo build --release -p vitrine-cli
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
# network | vitrine bench flags | bench_pytorch.py flags
cases=(
  "fashion-cnn|--model fashion-cnn|--model fashion-cnn"
  "fashion-cnn, batch 1|--model fashion-cnn --batch-size 1|--model fashion-cnn --batch-size 1"
  "resnet-small|--model resnet-small|--model resnet-small"
  "text-lstm-attn, 64 tokens|--model text-lstm-attn --seq-len 64|--model text-lstm-attn --seq-len 64"
  "text-lstm-attn, 128 tokens|--model text-lstm-attn --seq-len 128|--model text-lstm-attn --seq-len 128"
  "text-lstm-attn, batch 1|--model text-lstm-attn --seq-len 64 --batch-size 1|--model text-lstm-attn --seq-len 64 --batch-size 1"
  "text-gru-attn, 64 tokens|--model text-gru-attn --seq-len 64|--model text-gru-attn --seq-len 64"
  "conv-ae|--model conv-ae|--model conv-ae"
  "dcgan|--model dcgan|--model dcgan"
  "bpr-mf, ML-100K sizes|--model bpr-mf|--model bpr-mf"
  "resnet18, 3×224×224, batch 32|--model resnet18|--model resnet18"
)
timing="--warmup 2 --steps 30 --seconds 10"
for round in $(seq "$rounds"); do
  for case in "${cases[@]}"; do
    IFS='|' read -r name vflags pflags <<< "$case"
    [[ "$name" == *"$only"* ]] || continue
    echo "round $round: $name" >&2
    # shellcheck disable=SC2086
    v=$(target/release/vitrine bench $vflags --backend flex $timing --single)
    # shellcheck disable=SC2086
    p=$("$venv/bin/python" scripts/bench_pytorch.py $pflags --threads "$threads" $timing)
    printf '%s\t%s\t%s\n' "$name" "$v" "$p" >> "$results"
  done
done
python3 - "$results" "$threads" <<'PY'
import json, statistics, sys, platform
rows = {}
for line in open(sys.argv[1], encoding="utf-8"):
    name, v, p = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((json.loads(v.strip().splitlines()[-1]), json.loads(p)))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"{cpu}, {sys.argv[2]} threads each; median of {len(next(iter(rows.values())))} interleaved rounds (min–max)\n")
print("| network | phase | Vitrine (flex) samples/s | PyTorch samples/s | ratio | peak memory Vitrine / PyTorch |")
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
        print(f"| {name} | {phase} | {fmt(v)} | {fmt(p)} | {statistics.median(v) / statistics.median(p):.2f}× | {memory} |")
PY
