#!/usr/bin/env bash
# Builds of `vitrine` in turns on flex, training and inference samples/s of the networks whose
# convolutions and pooling have AVX2 code since 2026-12-07:
#   alternate.sh ROUNDS BUILD...        (ONLY=resnet: just the rows whose names contain it)
set -euo pipefail
rounds="$1"
shift
rows=(
  "fashion-cnn|--model fashion-cnn"
  "resnet-small|--model resnet-small"
  "conv-ae|--model conv-ae"
  "dcgan|--model dcgan"
  "resnet18|--model resnet18"
)
for round in $(seq "$rounds"); do
  for row in "${rows[@]}"; do
    name="${row%%|*}" flags="${row#*|}"
    [[ "$name" == *"${ONLY:-}"* ]] || continue
    for binary in "$@"; do
      # shellcheck disable=SC2086
      line=$("$binary" bench $flags --backend flex --seconds 4 --steps 100000 --single)
      rate() { grep -o "\"$1_samples_per_sec\":[0-9.]*" <<<"$line" | cut -d: -f2; }
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$binary" "$(rate train)" "$(rate inference)"
    done
  done
done
