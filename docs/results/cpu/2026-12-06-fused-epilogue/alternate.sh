#!/usr/bin/env bash
# Builds of `vitrine` in turns, training and inference images/s of the image models on flex:
#   alternate.sh ROUNDS BUILD...        (ONLY=fashion-cnn: just the rows whose names contain it)
set -euo pipefail
rounds="$1"
shift
rows=(
  "resnet-small|--model resnet-small"
  "fashion-cnn|--model fashion-cnn"
)
for round in $(seq "$rounds"); do
  for row in "${rows[@]}"; do
    name="${row%%|*}" flags="${row#*|}"
    [[ "$name" == *"${ONLY:-}"* ]] || continue
    for binary in "$@"; do
      # shellcheck disable=SC2086
      line=$("$binary" bench $flags --backend flex --seconds 4 --steps 100000 --single)
      rate() { grep -o "\"$1_samples_per_sec\":[0-9]*" <<<"$line" | cut -d: -f2; }
      printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$binary" "$(rate train)" "$(rate inference)"
    done
  done
done
