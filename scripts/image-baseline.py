#!/usr/bin/env python3
"""The linear baseline beside the image classifiers: multinomial logistic regression on the raw
pixels (scaled to [0, 1]) of Fashion-MNIST, fitted by scikit-learn on all 60,000 training images
(a superset of any run's training split, so the baseline is not shortchanged) and scored on the
10,000 test images every run is tested on.

    scripts/fetch-datasets.sh fashion-mnist
    python3 scripts/image-baseline.py [datasets/full/fashion-mnist]     # needs numpy, scikit-learn
"""
import gzip
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score


def idx(path: Path, offset: int, shape) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read()[offset:], dtype=np.uint8).reshape(shape)


folder = Path(sys.argv[1] if len(sys.argv) > 1 else "datasets/full/fashion-mnist")
x_train = idx(folder / "train-images-idx3-ubyte.gz", 16, (-1, 784)) / 255.0
y_train = idx(folder / "train-labels-idx1-ubyte.gz", 8, (-1,))
x_test = idx(folder / "t10k-images-idx3-ubyte.gz", 16, (-1, 784)) / 255.0
y_test = idx(folder / "t10k-labels-idx1-ubyte.gz", 8, (-1,))
start = time.time()
model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
predicted = model.predict(x_test)
print(f"logistic regression on pixels: test accuracy {accuracy_score(y_test, predicted):.2%}, "
      f"macro-F1 {f1_score(y_test, predicted, average='macro'):.4f} "
      f"({len(y_train)} training images, {time.time() - start:.0f} s)")
