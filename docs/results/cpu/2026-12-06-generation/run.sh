#!/usr/bin/env bash
# The README's generation table trained again with one build, one run after another:
#   run.sh VITRINE RUNS_FOLDER CLASSIFIER_RUN   (CLASSIFIER_RUN: a `vitrine train configs/fashion-cnn.toml` run)
# Each run's report.json lands in RUNS_FOLDER/NAME; the last lines of each are printed.
set -euo pipefail
v="${1:-target/release/vitrine}" runs="${2:-runs/generation}" classifier="${3:-runs/fashion-cnn}"
train() { local name="$1"; shift; echo "== $name: vitrine train $*"; "$v" train "$@" --set eval.classifier="$classifier" --out "$runs/$name" 2>&1 | tail -n 4; }
train conv-ae configs/conv-ae.toml
train conv-vae configs/conv-ae.toml --set model.variational=true
train conv-vae-kl0.1 configs/conv-ae.toml --set model.variational=true --set model.kl_weight=0.1
train cgan configs/cgan.toml
train dcgan configs/dcgan.toml
