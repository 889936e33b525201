#!/usr/bin/env bash
# Runs RecBole 1.2.1 on exactly the split of a Vitrine recommendation run, so the two compare
# on the same customers and the same held-out interactions (RecBole's `benchmark_filename`).
# RecBole itself is set up as ../shared/anchors/recbole/README.md says (a scratch virtualenv).
#
#   scripts/recbole-same-split.sh RUN MODEL [key=value ...]
#   scripts/recbole-same-split.sh runs/bpr-mf BPR epochs=300 stopping_step=10
#
# Environment: RECBOLE_PYTHON (default /tmp/rbenv/bin/python), RECBOLE_ANCHOR (default
# ../shared/anchors/recbole). Prints RecBole's RESULT line: test scores of the epoch best on
# validation MRR@10, and the seconds it took.
set -euo pipefail
run="$1"; model="$2"; shift 2
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${RECBOLE_PYTHON:-/tmp/rbenv/bin/python}"
anchor="$(cd "${RECBOLE_ANCHOR:-$here/../shared/anchors/recbole}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data/vitrine-split"
# RecBole's atomic files: tab-separated, typed headers; one file per part of the split. The time
# column is each row's place in the run's order (training rows in each customer's time order, then
# validation, then test), so a sequential model sees exactly Vitrine's sequences: many MovieLens
# customers rated their last movies in the same second, and RecBole would order ties its own way.
python3 - "$run" "$work/data/vitrine-split" <<'PY'
import csv, sys
run, out = sys.argv[1], sys.argv[2]
order = 0
for part in ("train", "valid", "test"):
    with open(f"{run}/split-{part}.csv", newline="", encoding="utf-8") as src, \
         open(f"{out}/vitrine-split.{part}.inter", "w", encoding="utf-8") as dst:
        rows = csv.reader(src)
        next(rows)
        dst.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, item, _time in rows:
            order += 1
            dst.write(f"{user}\t{item}\t{order}\n")
PY
# The anchor's run.py, but on our dataset: RecBole reads a dataset named `ml-100k` from its own
# bundled copy whatever data_path says, so the split gets a name of its own.
cat > "$work/run.py" <<'PY'
import sys, time, json
from recbole.quick_start import run_recbole
model, data = sys.argv[1], sys.argv[2]
extra = dict(a.split('=', 1) for a in sys.argv[3:])
cfg = {'data_path': data, 'show_progress': False, 'gpu_id': '', 'use_gpu': False, 'epochs': int(extra.pop('epochs', 50)),
       'stopping_step': 5, 'eval_step': 1, 'checkpoint_dir': data + '/saved', 'log_wandb': False,
       'benchmark_filename': ['train', 'valid', 'test'], 'load_col': {'inter': ['user_id', 'item_id', 'timestamp']}}
for k, v in extra.items():
    try: cfg[k] = json.loads(v)
    except Exception: cfg[k] = v
t = time.time()
r = run_recbole(model=model, dataset='vitrine-split', config_dict=cfg)
print('RESULT', model, json.dumps({'test': {k: float(v) for k, v in r['test_result'].items()}, 'valid_best': float(r['best_valid_score']), 'seconds': time.time() - t}))
PY
cd "$work"
PYTHONPATH="$anchor/stub" "$python" "$work/run.py" "$model" "$work/data" "$@" 2>&1 | grep -E "^RESULT|Error" || true
