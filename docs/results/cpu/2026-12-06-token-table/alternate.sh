#!/usr/bin/env bash
# Two builds of `vitrine` in turns, inference texts/s of the text models on flex:
#   alternate.sh BEFORE AFTER [ROUNDS]
set -euo pipefail
before="$1" after="$2" rounds="${3:-3}"
rows=(
  "text-lstm-attn, 64 tokens|--model text-lstm-attn"
  "text-lstm-attn, 128 tokens|--model text-lstm-attn --seq-len 128"
  "text-lstm-attn, batch 1|--model text-lstm-attn --batch-size 1"
  "text-gru-attn, 64 tokens|--model text-gru-attn"
)
for round in $(seq "$rounds"); do
  for row in "${rows[@]}"; do
    name="${row%%|*}" flags="${row#*|}"
    for build in before after; do
      binary=$before; [ "$build" = after ] && binary=$after
      # shellcheck disable=SC2086
      rate=$("$binary" bench $flags --backend flex --seconds 4 --steps 100000 --single | grep -o '"inference_samples_per_sec":[0-9]*' | cut -d: -f2)
      printf '%s\t%s\t%s\t%s\n' "$round" "$name" "$build" "$rate"
    done
  done
done
