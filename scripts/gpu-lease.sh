#!/usr/bin/env bash
# The GPU half of the speed comparison (issue 11) as one command for a lent GPU machine, which has
# PyTorch with CUDA but no registry and no Rust: a task gets 15 minutes of device time, a command
# 10, so everything is prepared here and the figures come back from one call. Prepare here:
#
#   cargo build --release -p vitrine-cli --features cuda           # wgpu (WGSL) and cuda in one binary
#   mkdir -p .lease && strip -o /tmp/vitrine target/release/vitrine
#   xz -T2 -c /tmp/vitrine > .lease/vitrine.xz   # ~24 MB: it travels with the working tree (64 MiB in all)
#   git rev-parse --short HEAD > .lease/commit.txt                      # the build, for the record
#   # the Vulkan loader, if the machine lacks it: the device tool's README, its `.gl` recipe
#
# then, on the lent machine (the device tool's `run`, carry [".lease", ".gl"], timeout_s 570):
#
#   bash scripts/gpu-lease.sh
#
# Each part has a time limit of its own and a part that fails or runs out does not stop the next;
# what was measured comes back under $OUT: machine.txt (nvidia-smi, `vitrine devices`), wgpu.tsv
# (the side-by-side lines of scripts/bench-vs-pytorch.sh; `python3 scripts/bench_table.py
# wgpu.tsv 16 wgpu` prints the table), unfused.jsonl (the recurrent models without the one-kernel
# recurrence, VITRINE_UNFUSED_RECURRENCE=1), cuda.tsv, and log.txt. What has never been measured
# on a GPU goes first: the recurrence kernels, then CUDA, then the rest of the table (last
# measured on 2026-11-24); the limits add up to 560 s.
#
# LEASE_SECONDS scales every part's limit (default 1). A dry run of the plumbing on a machine
# without a GPU (wgpu on a software adapter; PyTorch finds no CUDA, so each side-by-side part stops
# at PyTorch's side, and the CUDA parts at Vitrine's, built without it), 1 minute 40:
#   OUT=/tmp/lease-dry LEASE_SECONDS=0.25 BENCH_PYTHON=PYTHON_WITH_TORCH bash scripts/gpu-lease.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu-lease}" scale="${LEASE_SECONDS:-1}"
if [ -z "${VITRINE:-}" ]; then
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    .lease/vitrine.xz /tmp/vitrine
  chmod +x /tmp/vitrine
  VITRINE=/tmp/vitrine
fi
export VITRINE BENCH_PYTHON="${BENCH_PYTHON:-python3}" PYTHONUNBUFFERED=1
export BENCH_TIMING="${BENCH_TIMING:---warmup 5 --steps 100 --seconds 2}"
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
limit() { python3 -c "import sys; print(max(5, round(float(sys.argv[1]) * $scale)))" "$1"; }
part() { # part SECONDS NAME COMMAND...: the command under a time limit, its time and status logged
  local seconds name start status
  seconds=$(limit "$1") name="$2"
  shift 2
  echo "== $name (at most ${seconds} s)" >&2
  start=$SECONDS
  timeout "$seconds" "$@"
  status=$?
  echo "== $name: status $status after $((SECONDS - start)) s" >&2
}

if ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
{ cat .lease/commit.txt 2>/dev/null; nvidia-smi; "$VITRINE" devices; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

# 1. The recurrent models through wgpu beside PyTorch CUDA (cuDNN's LSTM/GRU), then without the
#    one-kernel recurrence: what the kernels save in launches.
export BENCH_BACKEND=wgpu BENCH_RAW="$out/wgpu.tsv"
part 120 "wgpu: recurrent models" scripts/bench-vs-pytorch.sh 1 16 text-
for model in text-lstm-attn text-gru-attn; do
  # shellcheck disable=SC2086
  VITRINE_UNFUSED_RECURRENCE=1 part 30 "wgpu, unfused recurrence: $model" \
    "$VITRINE" bench --model "$model" --backend wgpu $BENCH_TIMING --single >> "$out/unfused.jsonl"
done

# 2. CUDA (NVRTC compiles each kernel at first use: autotune kept minimal so that first use ends).
export BENCH_BACKEND=cuda BENCH_RAW="$out/cuda.tsv"
export CUBECL_AUTOTUNE_LEVEL=minimal
part 70 "cuda: fashion-cnn" scripts/bench-vs-pytorch.sh 1 16 fashion-cnn   # two rows: batch 128 and 1
part 60 "cuda: text-lstm-attn" scripts/bench-vs-pytorch.sh 1 16 "text-lstm-attn, 64"
unset CUBECL_AUTOTUNE_LEVEL

# 3. The rest of the table, a network at a time (one that fails leaves the others).
export BENCH_BACKEND=wgpu BENCH_RAW="$out/wgpu.tsv"
part 50 "wgpu: fashion-cnn" scripts/bench-vs-pytorch.sh 1 16 fashion-cnn   # two rows: batch 128 and 1
for network in resnet-small conv-ae dcgan bpr-mf neumf two-tower sasrec resnet18; do
  part 25 "wgpu: $network" scripts/bench-vs-pytorch.sh 1 16 "$network"
done
