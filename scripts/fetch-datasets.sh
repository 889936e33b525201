#!/usr/bin/env bash
# Installs the full Fashion-MNIST (Zalando product photos, IDX) from Debian's
# `dataset-fashion-mnist` package and links it at datasets/full/fashion-mnist,
# where configs/fashion-cnn.toml and configs/resnet-small.toml look for it.
set -euo pipefail
cd "$(dirname "$0")/.."

src=/usr/share/datasets/fashion-mnist
dst=datasets/full/fashion-mnist

if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dataset-fashion-mnist
  else
    cat >&2 <<MSG
apt-get is not available here. Get the four Fashion-MNIST files
  train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
  t10k-images-idx3-ubyte.gz  t10k-labels-idx1-ubyte.gz
(from Debian's dataset-fashion-mnist package, or Zalando's fashion-mnist repository)
and put them in $dst/.
MSG
    exit 1
  fi
fi

mkdir -p "$(dirname "$dst")"
ln -sfn "$src" "$dst"
echo "Fashion-MNIST: $(ls "$dst"/ | tr '\n' ' ')"
echo "linked at $dst"
