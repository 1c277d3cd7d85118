"""Benchmark: planted label noise on make_classification, found by sluice's label-issue path and by cleanlab's default.

configs/make_classification.yaml's data (1,000 rows, 10 features, 2 classes) with 5 % of the labels
flipped (seeded). sluice's path (`labels.label_issues`): cleanlab's `find_label_issues` on out-of-fold
probabilities of the pipeline's own model design (the config's MLP, `oof_from_training`). Baseline, in
the same process: cleanlab's default `find_label_issues` on out-of-fold probabilities of a plain
scikit-learn logistic regression. Printed: precision and recall of the flagged rows against the flips,
and the test metric of the config's model trained with the flagged rows kept, excluded, or relabelled
(a reviewer who gives the true label), on a held-out test set scored against the true labels.

Run from the repository root: .venv/bin/python -m bench.label_issues
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np
import numpy.typing as npt
import pandas as pd
from cleanlab.filter import find_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split

from sluice.config import load_config
from tasks.columns import ITEM_ID, LABEL
from tasks.demo_data import make_classification_frame
from tasks.evaluate import evaluate_predictions
from tasks.label_quality import Inputs, flag_label_issues, oof_from_training
from tasks.train import train_model

CONFIG = "configs/make_classification.yaml"
FLIP_SHARE = 0.05
SEED = 13


def planted_noise(frame: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, npt.NDArray[np.bool_]]:
    """The rows with `LABEL` holding the given label, 5 % of them flipped to the other class; and the flip mask."""
    rng = np.random.default_rng(SEED)
    flipped = np.zeros(len(frame), dtype=bool)
    flipped[rng.choice(len(frame), size=round(FLIP_SHARE * len(frame)), replace=False)] = True
    truth = frame["target"].astype(str).to_numpy()
    other = np.where(truth == classes[0], classes[1], classes[0])
    return frame.assign(**{LABEL: np.where(flipped, other, truth)}), flipped


def precision_recall(flagged: npt.NDArray[np.bool_], flipped: npt.NDArray[np.bool_]) -> tuple[float, float, int]:
    """Share of flagged rows that were flipped, share of flipped rows flagged, and how many were flagged."""
    hits = int((flagged & flipped).sum())
    return hits / max(1, int(flagged.sum())), hits / int(flipped.sum()), int(flagged.sum())


def baseline_flags(frame: pd.DataFrame, features: list[str], codes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """cleanlab's default find_label_issues on 5-fold out-of-fold probabilities of a plain logistic regression."""
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    proba = cross_val_predict(
        LogisticRegression(max_iter=1000), frame[features], codes, cv=folds, method="predict_proba"
    )
    return np.asarray(find_label_issues(codes, proba), dtype=bool)


def test_metrics(
    train: pd.DataFrame, test: pd.DataFrame, config: object, features: list[str], classes: list[str]
) -> dict[str, float]:
    """The config's model trained on `train` (its own val part for early stopping), scored on `test`'s true labels."""
    fit, val = train_test_split(train, test_size=0.15, stratify=train[LABEL], random_state=SEED)
    result = train_model(fit, val, label_col=LABEL, classes=classes, config=config, feature_cols=features)  # type: ignore[arg-type]
    metrics = evaluate_predictions(test["target"].astype(str), result.predictor.predict_proba(test), classes)
    return {k: round(metrics[k], 4) for k in ("accuracy", "f1_macro")}


def main() -> None:
    config = load_config(CONFIG)
    classes = config.labels.classes
    features = list(config.columns.features)
    raw = make_classification_frame(config.demo.rows if config.demo else 1000)
    raw["target"] = raw["target"].astype(str)
    frame, flipped = planted_noise(raw.assign(**{ITEM_ID: [f"r{i:04d}" for i in range(len(raw))]}), classes)
    codes = pd.Index(classes).get_indexer(pd.Index(frame[LABEL]))
    print(f"python {sys.version.split()[0]} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{CONFIG}: {len(frame)} rows, {int(flipped.sum())} labels flipped ({FLIP_SHARE:.0%}, seed {SEED})\n")

    start = time.perf_counter()
    proba = oof_from_training(
        frame, config=config.train, label_col=LABEL, classes=classes, inputs=Inputs(feature_cols=tuple(features))
    )
    sluice_flags, _ = flag_label_issues(codes, proba)
    sluice_s = time.perf_counter() - start
    start = time.perf_counter()
    plain_flags = baseline_flags(frame, features, codes)
    plain_s = time.perf_counter() - start
    print("| flagged by | rows flagged | precision | recall | seconds |")
    print("|---|---|---|---|---|")
    for name, flags, seconds in (
        ("sluice (config's MLP, out of fold, <= 20 epochs)", sluice_flags, sluice_s),
        ("cleanlab default on plain logistic regression", plain_flags, plain_s),
    ):
        precision, recall, n = precision_recall(flags, flipped)
        print(f"| {name} | {n} | {precision:.2f} | {recall:.2f} | {seconds:.1f} |")

    # The test set keeps its true labels: it measures the model, not the noise.
    train_rows, test_rows = train_test_split(np.arange(len(frame)), test_size=0.15, stratify=codes, random_state=SEED)
    train, test = frame.iloc[train_rows], frame.iloc[test_rows]
    flagged_train = sluice_flags[train_rows]
    relabelled = train.assign(**{LABEL: np.where(flagged_train, train["target"], train[LABEL])})
    print(
        f"\nTest set: {len(test)} rows, true labels. Flagged rows among the {len(train)} training rows: "
        f"{int(flagged_train.sum())}\n"
    )
    print("| flagged rows | accuracy | f1_macro |")
    print("|---|---|---|")
    for name, rows in (("kept", train), ("excluded", train[~flagged_train]), ("relabelled (true label)", relabelled)):
        metrics = test_metrics(rows, test, config.train, features, classes)
        print(f"| {name} | {metrics['accuracy']:.4f} | {metrics['f1_macro']:.4f} |")
    clean = test_metrics(train.assign(**{LABEL: train["target"]}), test, config.train, features, classes)
    print(f"| (no noise planted) | {clean['accuracy']:.4f} | {clean['f1_macro']:.4f} |")


if __name__ == "__main__":
    main()
