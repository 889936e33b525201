#!/usr/bin/env python3
"""Classical baseline on exactly the split of a Vitrine text run.

Fits TF-IDF character n-grams + logistic regression (scikit-learn) on the run's
split-train.jsonl and scores split-valid.jsonl and split-test.jsonl, so a network's test
accuracy can be set against a strong linear model on the same texts.

    pip install scikit-learn
    python3 scripts/text-baseline.py runs/text-lstm-attn
    python3 scripts/text-baseline.py runs/text-lstm-attn --ngram 1 5 --nb     # NB-weighted features
    python3 scripts/text-baseline.py runs/text-lstm-attn --words              # + jieba words (pip install jieba)
"""
import argparse
import json
import sys
import tomllib
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a Vitrine text-classification run folder")
    parser.add_argument("--ngram", type=int, nargs=2, default=(1, 3), metavar=("MIN", "MAX"), help="character n-gram range (default 1 3)")
    parser.add_argument("--C", type=float, nargs="+", default=[10.0], help="inverse regularisation strengths to try (default 10)")
    parser.add_argument("--min-df", type=int, default=2, help="drop n-grams seen in fewer training texts (default 2)")
    parser.add_argument("--nb", action="store_true", help="binary n-grams scaled by their naive-Bayes log-count ratio (NBSVM-style; two classes)")
    parser.add_argument("--words", action="store_true", help="add jieba-segmented words and word bigrams (Chinese)")
    args = parser.parse_args()

    try:
        import numpy as np
        import scipy.sparse as sp
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        sys.exit("needs scikit-learn: pip install scikit-learn")

    config = tomllib.loads((args.run / "config.toml").read_text(encoding="utf-8"))
    source = config["data"]["train"]
    text_key, label_key = source.get("text_column", "text"), source.get("label_column", "label")

    def load(part):
        path = args.run / f"split-{part}.jsonl"
        if not path.is_file():
            sys.exit(f"{path}: missing (runs trained before Vitrine kept their split have none)")
        rows = [json.loads(line) for line in path.open(encoding="utf-8")]
        return [r[text_key] for r in rows], np.array([r[label_key] for r in rows])

    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = load("train"), load("valid"), load("test")
    print(f"{args.run}: {len(train_x)} train / {len(valid_x)} valid / {len(test_x)} test texts")

    ngram = tuple(args.ngram)
    if args.nb:
        classes = sorted(set(train_y))
        if len(classes) != 2:
            sys.exit("--nb needs exactly two classes")
        vectorizer = CountVectorizer(analyzer="char", ngram_range=ngram, binary=True, min_df=args.min_df)
        counts = vectorizer.fit_transform(train_x)
        p = 1 + counts[train_y == classes[1]].sum(0)
        q = 1 + counts[train_y == classes[0]].sum(0)
        ratio = sp.diags(np.asarray(np.log((p / p.sum()) / (q / q.sum()))).ravel())
        features = lambda texts: vectorizer.transform(texts) @ ratio
        train_features = counts @ ratio
    else:
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=ngram, sublinear_tf=True, min_df=args.min_df)
        train_features = vectorizer.fit_transform(train_x)
        features = vectorizer.transform
    if args.words:
        try:
            import jieba
        except ImportError:
            sys.exit("--words needs jieba: pip install jieba")
        jieba.setLogLevel(60)
        segment = lambda texts: [" ".join(jieba.lcut(t)) for t in texts]
        words = TfidfVectorizer(analyzer="word", token_pattern=r"\S+", ngram_range=(1, 2), sublinear_tf=True)
        train_features = sp.hstack([train_features, words.fit_transform(segment(train_x))]).tocsr()
        chars = features
        features = lambda texts: sp.hstack([chars(texts), words.transform(segment(texts))]).tocsr()

    valid_features, test_features = features(valid_x), features(test_x)
    kind = ("NB-weighted binary" if args.nb else "TF-IDF") + f" char {ngram[0]}-{ngram[1]}-grams" + (" + jieba words" if args.words else "")
    for c in args.C:
        model = LogisticRegression(C=c, max_iter=5000).fit(train_features, train_y)
        print(f"{kind}, logistic regression C={c:g}: valid accuracy {model.score(valid_features, valid_y):.4f}, "
              f"test accuracy {model.score(test_features, test_y):.4f}")


if __name__ == "__main__":
    main()
