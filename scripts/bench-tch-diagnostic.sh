#!/usr/bin/env bash
# Where the time goes (issue 11's diagnostic): burn's own LibTorch backend (`vitrine bench
# --backend tch`) beside flex and PyTorch, on the reference networks, interleaved round after
# round with threads pinned alike. LibTorch is the library PyTorch itself runs, and the same
# version here, so in the table
#   tch / PyTorch  is burn's overhead outside the kernels (op-by-op dispatch, autodiff, optimizer),
#   flex / tch     is flex's kernels against LibTorch's under the same burn.
# A diagnostic, not a backend to ship: this build links the PyTorch wheel's libtorch.
#
#   scripts/bench-tch-diagnostic.sh [ROUNDS] [THREADS] [ONLY]   # defaults: 2 rounds, 2 threads, every network
#
# The first time: creates $TCH_VENV (default .venv-tch) with torch 2.9.0, the version tch 0.22
# is written for, and builds vitrine with `--features tch` into $TCH_TARGET (default
# target/tch: a build of its own, as long as a clean one). Also VITRINE (the flex binary, default
# target/release/vitrine), BENCH_TIMING and BENCH_RAW, as in scripts/bench-vs-pytorch.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}" threads="${2:-2}" only="${3:-}"
venv="${TCH_VENV:-.venv-tch}" target="${TCH_TARGET:-target/tch}" flex="${VITRINE:-target/release/vitrine}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch==2.9.0 numpy
fi
venv="$(cd "$venv" && pwd)"
tch="$target/release/vitrine"
if [ ! -x "$tch" ]; then
  # torch-sys asks the venv's Python where libtorch and its headers are.
  VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 CARGO_TARGET_DIR="$target" \
    cargo build --release -p vitrine-cli --features tch
fi
[ -x "$flex" ] || cargo build --release -p vitrine-cli
libtorch="$("$venv/bin/python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export RAYON_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
if [ -n "${BENCH_RAW:-}" ]; then
  results="$BENCH_RAW"
else
  results="$(mktemp)"
  trap 'rm -f "$results"' EXIT
fi
# network | vitrine bench flags | bench_pytorch.py flags (batch-1 rows left out: the diagnostic is about the step)
cases=(
  "fashion-cnn|--model fashion-cnn|--model fashion-cnn"
  "resnet-small|--model resnet-small|--model resnet-small"
  "text-lstm-attn, 64 tokens|--model text-lstm-attn --seq-len 64|--model text-lstm-attn --seq-len 64"
  "text-gru-attn, 64 tokens|--model text-gru-attn --seq-len 64|--model text-gru-attn --seq-len 64"
  "conv-ae|--model conv-ae|--model conv-ae"
  "dcgan|--model dcgan|--model dcgan"
  "bpr-mf, ML-100K sizes|--model bpr-mf|--model bpr-mf"
)
timing="${BENCH_TIMING:---warmup 2 --steps 30 --seconds 10}"
measure() {
  local f t p
  # shellcheck disable=SC2086
  f=$("$flex" bench $1 --backend flex $timing --single) || return
  # shellcheck disable=SC2086
  t=$(LD_LIBRARY_PATH="$libtorch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tch" bench $1 --backend tch $timing --single) || return
  # shellcheck disable=SC2086
  p=$("$venv/bin/python" scripts/bench_pytorch.py $2 --threads "$threads" --device cpu $timing) || return
  printf '%s\t%s\t%s' "$f" "$t" "$p"
}
# shellcheck source=scripts/interleave.sh
source scripts/interleave.sh
interleave "$rounds" "$only" "$results"
"$venv/bin/python" scripts/bench_tch_table.py "$results" "$threads"
