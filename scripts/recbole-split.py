"""Writes RecBole 1.2.1's own split of MovieLens-100K (its default protocol: per-user random
80/10/10 after shuffling with its seed 2020) as three atomic `.inter` files, so a Vitrine run can
train and test on exactly the interactions RecBole's published-style figures use
(`data.split.kind = "files"`, see configs/bpr-mf-recbole-split.toml).

    PYTHONPATH=../shared/anchors/recbole/stub /tmp/rbenv/bin/python scripts/recbole-split.py OUT_DIR

RecBole is set up as ../shared/anchors/recbole/README.md says (a scratch virtualenv). The split is
made exactly as `run_recbole` makes it: the same config, seed and calls before the split.
"""
import os
import sys

import recbole
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
config = Config(model="BPR", dataset="ml-100k", config_dict={"gpu_id": "", "use_gpu": False, "show_progress": False, "checkpoint_dir": "/tmp/rb/saved"})
init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
dataset = create_dataset(config)
parts = data_preparation(config, dataset)
# RecBole min-max scales float columns in memory; the files keep the original ratings and times.
raw = {}
with open(os.path.join(os.path.dirname(recbole.__file__), "dataset_example/ml-100k/ml-100k.inter"), encoding="utf-8") as f:
    next(f)
    for line in f:
        user, item, rating, time = line.rstrip("\n").split("\t")
        raw[(user, item)] = (rating, time)
for name, loader in zip(("train", "valid", "test"), parts):
    inter = loader.dataset.inter_feat
    users = dataset.id2token("user_id", inter["user_id"].numpy())
    items = dataset.id2token("item_id", inter["item_id"].numpy())
    with open(f"{out}/ml-100k.{name}.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, item in zip(users, items):
            f.write("\t".join((user, item) + raw[(user, item)]) + "\n")
    print(name, len(users), "interactions")
