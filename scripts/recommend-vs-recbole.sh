#!/usr/bin/env bash
# Vitrine's recommenders beside RecBole 1.2.1 on MovieLens-100K, on the same split, one after the
# other on this machine: trains each Vitrine config (configs/pop.toml … two-tower.toml), then runs
# RecBole's counterpart on that run's exact split (scripts/recbole-same-split.sh), and prints one
# Markdown table: test Recall, NDCG, MRR and Hit @10, and the wall-clock seconds of each (Vitrine:
# the whole `vitrine train`, data loading and test included; RecBole: its `run_recbole` call).
#
#   scripts/fetch-datasets.sh movielens     # once
#   scripts/recommend-vs-recbole.sh [SEED]  # SEED: run.split_seed (default 42)
#
# RecBole must be installed as ../shared/anchors/recbole/README.md says (RECBOLE_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-42}"
vitrine="${VITRINE:-target/release/vitrine}"
out="runs/vs-recbole-$seed"
mkdir -p "$out"
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
echo "| model | implementation | recall@10 | ndcg@10 | mrr@10 | hit@10 | seconds |"
echo "|---|---|---|---|---|---|---|"
for pair in pop:Pop item-knn:ItemKNN bpr-mf:BPR neumf:NeuMF two-tower:; do
  model="${pair%%:*}" recbole="${pair#*:}"
  run="$out/$model"
  rm -rf "$run"
  start=$(date +%s.%N)
  "$vitrine" train "configs/$model.toml" --backend flex --set run.split_seed="$seed" --out "$run" > "$run.log" 2>&1
  seconds=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
  python3 - "$run/report.json" "$model" "$seconds" <<'PY'
import json, sys
figures = dict(json.load(open(sys.argv[1]))["held_out"])
print(f"| `{sys.argv[2]}` | Vitrine | {figures['test recall@10']:.4f} | {figures['test ndcg@10']:.4f} | {figures['test mrr@10']:.4f} | {figures['test hit@10']:.4f} | {sys.argv[3]} |")
PY
  if [ -n "$recbole" ]; then
    line=$(scripts/recbole-same-split.sh "$run" "$recbole" epochs=300 stopping_step=10 | grep '^RESULT' || true)
    python3 - "$recbole" "$line" <<'PY'
import json, sys
name, line = sys.argv[1], sys.argv[2]
if not line:
    print(f"| {name} | RecBole 1.2.1 | failed | | | | |")
else:
    r = json.loads(line.split(" ", 2)[2]); t = r["test"]
    print(f"| {name} | RecBole 1.2.1 | {t['recall@10']:.4f} | {t['ndcg@10']:.4f} | {t['mrr@10']:.4f} | {t['hit@10']:.4f} | {r['seconds']:.1f} |")
PY
  fi
done
