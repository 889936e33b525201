#!/usr/bin/env bash
# The README's "Streaming a photo catalogue" table: vitrine bench --data on the photo folders of
# scripts/make-photo-folder.py (/tmp/photos: --count 100000; /tmp/photos-small: --count 2000),
# one row after another, each with its wall time and maximum resident set. Usage: run.sh VITRINE
set -euo pipefail
v="${1:-target/release/vitrine}"
row() { /usr/bin/time -f "# %e s, max RSS %M KiB" "$v" bench --backend flex --json "$@" 2>&1 | grep -v '^\s*$' | tr -d '\n'; echo; }
row --model resnet18 --data /tmp/photos --steps 10 --seconds 60
row --model resnet18 --data /tmp/photos-small --steps 10 --seconds 60
row --model resnet-small --data /tmp/photos --steps 10 --seconds 60
row --model resnet-small --data /tmp/photos --batch-size 8 --steps 4 --warmup 1 --seconds 30
