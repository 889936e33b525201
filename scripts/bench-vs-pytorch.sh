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
# On a GPU: BENCH_BACKEND=wgpu (or cuda, with a vitrine built with `--features cuda`) runs Vitrine
# there and PyTorch on CUDA (the PyPI wheel is the CUDA build); each step on both sides waits for
# its result. Also: VITRINE (the binary, default target/release/vitrine), BENCH_PYTHON (a Python
# that already has torch and torchvision, instead of the virtualenv), BENCH_TIMING (the timing
# flags of both sides, default "--warmup 2 --steps 30 --seconds 10"; bpr-mf, neumf and the batch-1
# rows time 100 to 20,000 steps instead of its --steps, as `cases` says), BENCH_RAW (a file that
# keeps every run's JSON line).
#
# Creates a virtualenv with PyTorch from PyPI at $BENCH_VENV (default .venv-bench) the first time;
# builds Vitrine in release mode when target/release/vitrine is missing. Inputs are random tensors
# of the real shapes on both sides (throughput does not depend on the pixel values).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}" threads="${2:-2}" only="${3:-}"
backend="${BENCH_BACKEND:-flex}" vitrine="${VITRINE:-target/release/vitrine}"
device=cpu
[ "$backend" = flex ] || [ "$backend" = ndarray ] || device=cuda
python="${BENCH_PYTHON:-}"
if [ -z "$python" ]; then
  venv="${BENCH_VENV:-.venv-bench}"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch numpy
  fi
  "$venv/bin/python" -c 'import torchvision' 2>/dev/null || "$venv/bin/pip" install --quiet torchvision
  python="$venv/bin/python"
fi
[ -x "$vitrine" ] || cargo build --release -p vitrine-cli
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
if [ -n "${BENCH_RAW:-}" ]; then
  results="$BENCH_RAW"  # keeps each run's JSON lines
else
  results="$(mktemp)"
  trap 'rm -f "$results"' EXIT
fi
# network | vitrine bench flags | bench_pytorch.py flags [| timed steps, instead of the timing's]
# A step of bpr-mf or neumf, or at batch 1, takes milliseconds: 30 of them made windows of 40 to
# 350 ms, which moved by ±10% (at batch 1 by ±20%) from round to round on both sides.
# A recommender's batch 1 is one customer's ranking over every item (serving's latency), timed
# alone (--rank-only); a call takes 0.03 to 2.2 ms, hence thousands of steps.
cases=(
  "fashion-cnn|--model fashion-cnn|--model fashion-cnn"
  "fashion-cnn, batch 1|--model fashion-cnn --batch-size 1|--model fashion-cnn --batch-size 1|300"
  "resnet-small|--model resnet-small|--model resnet-small"
  "resnet-small, batch 1|--model resnet-small --batch-size 1|--model resnet-small --batch-size 1|300"
  "text-lstm-attn, 64 tokens|--model text-lstm-attn --seq-len 64|--model text-lstm-attn --seq-len 64"
  "text-lstm-attn, 128 tokens|--model text-lstm-attn --seq-len 128|--model text-lstm-attn --seq-len 128"
  "text-lstm-attn, batch 1|--model text-lstm-attn --seq-len 64 --batch-size 1|--model text-lstm-attn --seq-len 64 --batch-size 1|300"
  "text-gru-attn, 64 tokens|--model text-gru-attn --seq-len 64|--model text-gru-attn --seq-len 64"
  "text-gru-attn, batch 1|--model text-gru-attn --seq-len 64 --batch-size 1|--model text-gru-attn --seq-len 64 --batch-size 1|300"
  "conv-ae|--model conv-ae|--model conv-ae"
  "conv-ae, batch 1|--model conv-ae --batch-size 1|--model conv-ae --batch-size 1|300"
  "dcgan|--model dcgan|--model dcgan"
  "dcgan, batch 1|--model dcgan --batch-size 1|--model dcgan --batch-size 1|300"
  "bpr-mf, ML-100K sizes|--model bpr-mf|--model bpr-mf|300"
  "bpr-mf, batch 1|--model bpr-mf --rank-customers 1 --rank-only|--model bpr-mf --rank-customers 1 --rank-only|20000"
  "neumf, ML-100K sizes|--model neumf|--model neumf|100"
  "neumf, batch 1|--model neumf --rank-customers 1 --rank-only|--model neumf --rank-customers 1 --rank-only|3000"
  "two-tower, ML-100K sizes|--model two-tower|--model two-tower"
  "two-tower, batch 1|--model two-tower --rank-customers 1 --rank-only|--model two-tower --rank-customers 1 --rank-only|3000"
  "sasrec, ML-100K sizes|--model sasrec|--model sasrec"
  "sasrec, batch 1|--model sasrec --rank-customers 1 --rank-only|--model sasrec --rank-customers 1 --rank-only|3000"
  "resnet18, 3×224×224, batch 32|--model resnet18|--model resnet18"
)
timing="${BENCH_TIMING:---warmup 2 --steps 30 --seconds 10}"
measure() {
  local v p t="$timing"
  if [ -n "${3:-}" ]; then
    case "$timing" in
      *--steps*) t=$(printf '%s' "$timing" | sed -E "s/--steps [0-9]+/--steps $3/") ;;
      *) t="$timing --steps $3" ;;
    esac
  fi
  # shellcheck disable=SC2086
  v=$("$vitrine" bench $1 --backend "$backend" $t --single) || return
  # shellcheck disable=SC2086
  p=$("$python" scripts/bench_pytorch.py $2 --threads "$threads" --device "$device" $t) || return
  printf '%s\t%s' "$v" "$p"
}
# shellcheck source=scripts/interleave.sh
source scripts/interleave.sh
interleave "$rounds" "$only" "$results"
"$python" scripts/bench_table.py "$results" "$threads" "$backend"
