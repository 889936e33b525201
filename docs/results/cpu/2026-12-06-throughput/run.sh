#!/usr/bin/env bash
# The "Throughput and memory" tables: one vitrine bench per row, each in its own process, one after
# another on an otherwise idle machine. Usage: run.sh VITRINE_BINARY > raw.jsonl
set -euo pipefail
v="${1:-target/release/vitrine}"
t=(--warmup 2 --steps 30 --seconds 10 --json)
# Each bench prints a JSON array (its backend measured in a process of its own); one line per row.
row() { "$v" bench "$@" "${t[@]}" 2>/dev/null | python3 -c 'import json, sys; [print(json.dumps(r, sort_keys=True)) for r in json.load(sys.stdin)]'; }
for m in fashion-cnn conv-ae dcgan; do row --model $m --backend flex; row --model $m --backend ndarray; done
row --model resnet-small --backend flex
row --model text-lstm-attn --backend flex
row --model text-lstm-attn --backend ndarray
row --model text-lstm-attn --backend flex --seq-len 128
row --model text-gru-attn --backend flex
row --model text-transformer --backend flex
ml=datasets/full/ml-100k/ml-100k.inter
if [ -f "$ml" ]; then
  row --model bpr-mf --backend flex --interactions "$ml"
  row --model bpr-mf --backend flex --interactions "$ml" --sparse-updates
fi
