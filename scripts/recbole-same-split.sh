#!/usr/bin/env bash
# Runs RecBole 1.2.1 on exactly the split of a Vitrine recommendation run, so the two compare
# on the same customers and the same held-out interactions (RecBole's `benchmark_filename`).
# RecBole itself is set up as ../shared/anchors/recbole/README.md says (a scratch virtualenv).
#
#   scripts/recbole-same-split.sh RUN MODEL [key=value ...]
#   scripts/recbole-same-split.sh runs/bpr-mf BPR epochs=300 stopping_step=10
#
# Environment: RECBOLE_PYTHON (default /tmp/rbenv/bin/python), RECBOLE_ANCHOR (default
# ../shared/anchors/recbole), RECBOLE_LOG (a file that keeps RecBole's whole log: each epoch's
# validation scores), RECBOLE_TEST_EVERY_EPOCH=1 (the log also gets the test scores after each
# epoch, so that a run stopped early still tells them), RECBOLE_RESUME (one of RecBole's checkpoints,
# `saved/*.pth` of an earlier run on the same split: continues it with RecBole's own resume, the
# weights, optimizer, epoch and early-stopping count; the file itself is left as it is). Prints RecBole's RESULT line: test scores of the epoch best on
# validation MRR@10, and the seconds it took.
set -euo pipefail
run="$1"; model="$2"; shift 2
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${RECBOLE_PYTHON:-/tmp/rbenv/bin/python}"
anchor="$(cd "${RECBOLE_ANCHOR:-$here/../shared/anchors/recbole}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data/vitrine-split"
# RecBole's atomic files: tab-separated, typed headers; one file per part of the split.
# General models read interactions; the time column is each row's place in the run's order.
# Sequential models read RecBole's augmented form: each row a customer's previous items (at most
# 50, oldest first) and the next one; training rows for every prefix of the training sequence,
# the validation row after the training items, the test row after those and the validation item.
# (Many MovieLens customers rated their last movies in the same second: the run's own order is
# kept rather than RecBole's ordering of ties.)
case "$model" in SASRec|GRU4Rec|BERT4Rec|NARM|STAMP|Caser|NextItNet|LightSANs|CORE) sequential=1 ;; *) sequential=0 ;; esac
python3 - "$run" "$work/data/vitrine-split" "$sequential" <<'PY'
import csv, sys
run, out, sequential = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
parts = {}
for part in ("train", "valid", "test"):
    with open(f"{run}/split-{part}.csv", newline="", encoding="utf-8") as src:
        rows = csv.reader(src)
        next(rows)
        parts[part] = [(user, item) for user, item, _time in rows]
if not sequential:
    order = 0
    for part, rows in parts.items():
        with open(f"{out}/vitrine-split.{part}.inter", "w", encoding="utf-8") as dst:
            dst.write("user_id:token\titem_id:token\ttimestamp:float\n")
            for user, item in rows:
                order += 1
                dst.write(f"{user}\t{item}\t{order}\n")
else:
    history = {}
    for part in ("train", "valid", "test"):
        with open(f"{out}/vitrine-split.{part}.inter", "w", encoding="utf-8") as dst:
            dst.write("user_id:token\titem_id_list:token_seq\titem_id:token\n")
            for user, item in parts[part]:
                seen = history.setdefault(user, [])
                if seen:
                    dst.write(f"{user}\t{' '.join(seen[-50:])}\t{item}\n")
                seen.append(item)
PY
# The anchor's run.py, but on our dataset: RecBole reads a dataset named `ml-100k` from its own
# bundled copy whatever data_path says, so the split gets a name of its own.
cat > "$work/run.py" <<'PY'
import os, sys, time, json
from recbole.quick_start import run_recbole
from recbole.data.dataset import sequential_dataset
from recbole.utils import FeatureSource, FeatureType

def _benchmark_presets(self):
    # RecBole 1.2.1 counts list lengths with Series.agg(len), which current pandas reads as the
    # length of the whole column; count per row instead.
    for field in self.inter_feat:
        if field + self.config["LIST_SUFFIX"] in self.inter_feat:
            setattr(self, f"{field}_list_field", field + self.config["LIST_SUFFIX"])
    self.set_field_property(self.item_list_length_field, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
    self.inter_feat[self.item_list_length_field] = self.inter_feat[self.item_id_list_field].apply(len)

sequential_dataset.SequentialDataset._benchmark_presets = _benchmark_presets

if os.environ.get('RECBOLE_TEST_EVERY_EPOCH'):
    # Also scores the test split after each validation (printed, never used to choose): a run cut
    # short still tells the test scores of its best validation epoch so far.
    from recbole.quick_start import quick_start
    from recbole.trainer import trainer as trainers
    prepare, fit = quick_start.data_preparation, trainers.Trainer.fit
    splits = {}
    def data_preparation(config, dataset):
        splits['parts'] = prepare(config, dataset)
        return splits['parts']
    def fit_with_test(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        def each_epoch(epoch, valid_score):
            test = self.evaluate(splits['parts'][2], load_best_model=False, show_progress=False)
            print('TEST_EPOCH', epoch, json.dumps({'valid_score': float(valid_score), 'test': {k: float(v) for k, v in test.items()}, 'seconds': time.time() - t}), flush=True)
            if callback_fn:
                callback_fn(epoch, valid_score)
        return fit(self, train_data, valid_data, verbose, saved, show_progress, each_epoch)
    quick_start.data_preparation, trainers.Trainer.fit = data_preparation, fit_with_test
if os.environ.get('RECBOLE_RESUME'):
    import shutil
    from recbole.trainer import trainer as trainers
    fit_before = trainers.Trainer.fit
    def fit_resumed(self, *args, **kwargs):
        # RecBole writes each better epoch over the file it resumed from: a copy of its own.
        resumed = os.path.join(os.path.dirname(sys.argv[2]), 'resumed.pth')
        shutil.copy(os.environ['RECBOLE_RESUME'], resumed)
        self.resume_checkpoint(resumed)
        return fit_before(self, *args, **kwargs)
    trainers.Trainer.fit = fit_resumed
model, data = sys.argv[1], sys.argv[2]
extra = dict(a.split('=', 1) for a in sys.argv[3:])
cfg = {'data_path': data, 'show_progress': False, 'gpu_id': '', 'use_gpu': False, 'epochs': int(extra.pop('epochs', 50)),
       'stopping_step': 5, 'eval_step': 1, 'checkpoint_dir': data + '/saved', 'log_wandb': False,
       'benchmark_filename': ['train', 'valid', 'test'], 'load_col': None}
for k, v in extra.items():
    try: cfg[k] = json.loads(v)
    except Exception: cfg[k] = v
t = time.time()
r = run_recbole(model=model, dataset='vitrine-split', config_dict=cfg)
print('RESULT', model, json.dumps({'test': {k: float(v) for k, v in r['test_result'].items()}, 'valid_best': float(r['best_valid_score']), 'seconds': time.time() - t}))
PY
cd "$work"
PYTHONPATH="$anchor/stub" "$python" "$work/run.py" "$model" "$work/data" "$@" 2>&1 | tee "${RECBOLE_LOG:-/dev/null}" | grep -E "^RESULT|Error|^  File|^    " | tail -${RECBOLE_TRACE_LINES:-4} || true
