"""Benchmark: planted label noise, found by sluice's label-issue path and by cleanlab's default.

Two data sets, 5 % of their labels flipped (seeded): configs/make_classification.yaml's data (1,000 rows,
10 features, 2 classes) and configs/rotten_tomatoes_labelled.yaml's review snippets (4,866 fresh/rotten
snippets of 156 movies after the config's cleaning: no plot summaries, no repeated text). sluice's path
(`labels.label_issues`): cleanlab's `find_label_issues` on out-of-fold probabilities of the pipeline's own
model design (the config's model, `oof_from_training`; folds grouped by movie for the snippets). Baseline,
in the same process: cleanlab's default `find_label_issues` on out-of-fold probabilities of a plain
scikit-learn logistic regression (on the features; on TF-IDF of the text, the same grouped folds).
Printed: precision and recall of the flagged rows against the flips, and the test metric of the config's
model trained with the flagged rows kept, excluded, or relabelled (a reviewer who gives the true label),
on a held-out test set (whole movies for the snippets) scored against the true labels.

Run from the repository root:
    .venv/bin/python -m bench.label_issues                        # make_classification
    .venv/bin/python -m bench.label_issues --data rotten_tomatoes
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from cleanlab.filter import find_label_issues
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GroupShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
    cross_val_predict,
    train_test_split,
)
from sklearn.pipeline import make_pipeline

from sluice.config import load_config
from tasks.clean import normalize_text
from tasks.columns import ITEM_ID, LABEL
from tasks.demo_data import make_classification_frame, rotten_tomatoes_frame
from tasks.evaluate import evaluate_predictions
from tasks.label_quality import Inputs, flag_label_issues, oof_from_training
from tasks.train import train_model

FLIP_SHARE = 0.05
SEED = 13


@dataclass(frozen=True)
class Data:
    """One benchmark data set: its config, its rows (true label in `target`) and what the models read."""

    config: str
    frame: pd.DataFrame
    inputs: Inputs


def load_data(name: str) -> Data:
    """The rows of the named data set, as its config's cleaning leaves them, with the true label in `target`."""
    if name == "make_classification":
        config = load_config("configs/make_classification.yaml")
        raw = make_classification_frame(config.demo.rows if config.demo else 1000)
        raw["target"] = raw["target"].astype(str)
        return Data("configs/make_classification.yaml", raw, Inputs(feature_cols=tuple(config.columns.features)))
    raw = rotten_tomatoes_frame()
    raw = raw[raw["category"].isin(["fresh", "rotten"])]  # the clean suite quarantines the plot summaries
    raw = raw.assign(text=normalize_text(raw["text"]))  # the config's clean.normalize_text, then dedupe_on
    raw = raw[~raw["text"].duplicated()].reset_index(drop=True)
    raw = raw.assign(target=raw["category"].astype(str))
    return Data("configs/rotten_tomatoes_labelled.yaml", raw, Inputs(text_col="text", group_col="movie_name"))


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


def baseline_flags(data: Data, codes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """cleanlab's default find_label_issues on 5-fold out-of-fold probabilities of a plain logistic regression."""
    frame, inputs = data.frame, data.inputs
    if inputs.text_col:
        model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
        x: object = frame[inputs.text_col]
        groups = frame[inputs.group_col] if inputs.group_col else None
        folds: object = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=SEED)
    else:
        model, x, groups = LogisticRegression(max_iter=1000), frame[list(inputs.feature_cols)], None
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    proba = cross_val_predict(model, x, codes, cv=folds, groups=groups, method="predict_proba")  # type: ignore[arg-type]
    return np.asarray(find_label_issues(codes, proba), dtype=bool)


def test_metrics(train: pd.DataFrame, test: pd.DataFrame, config: object, data: Data) -> dict[str, float]:
    """The config's model trained on `train` (its own val part for early stopping), scored on `test`'s true labels."""
    classes = config.labels.classes  # type: ignore[attr-defined]
    fit, val = train_test_split(train, test_size=0.15, stratify=train[LABEL], random_state=SEED)
    result = train_model(
        fit,
        val,
        label_col=LABEL,
        classes=classes,
        config=config.train,  # type: ignore[attr-defined]
        text_col=data.inputs.text_col,
        feature_cols=list(data.inputs.feature_cols) or None,
    )
    metrics = evaluate_predictions(test["target"].astype(str), result.predictor.predict_proba(test), classes)
    return {k: round(metrics[k], 4) for k in ("accuracy", "f1_macro")}


def _holdout(data: Data, codes: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Train and test row numbers: 15 % of the rows, or of the groups when the data has them."""
    if data.inputs.group_col:
        splitter = GroupShuffleSplit(n_splits=1, test_size=0.15, random_state=SEED)
        train_rows, test_rows = next(splitter.split(data.frame, codes, data.frame[data.inputs.group_col]))
        return train_rows, test_rows
    rows = np.arange(len(data.frame))
    train_rows, test_rows = train_test_split(rows, test_size=0.15, stratify=codes, random_state=SEED)
    return train_rows, test_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["make_classification", "rotten_tomatoes"], default="make_classification")
    data = load_data(parser.parse_args().data)
    config = load_config(data.config)
    classes = config.labels.classes
    frame, flipped = planted_noise(
        data.frame.assign(**{ITEM_ID: [f"r{i:05d}" for i in range(len(data.frame))]}), classes
    )
    data = Data(data.config, frame, data.inputs)
    codes = pd.Index(classes).get_indexer(pd.Index(frame[LABEL]))
    print(
        f"python {sys.version.split()[0]} on {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{data.config}: {len(frame)} rows, {int(flipped.sum())} labels flipped ({FLIP_SHARE:.0%}, seed {SEED})\n")

    start = time.perf_counter()
    proba = oof_from_training(frame, config=config.train, label_col=LABEL, classes=classes, inputs=data.inputs)
    sluice_flags, _ = flag_label_issues(codes, proba)
    sluice_s = time.perf_counter() - start
    start = time.perf_counter()
    plain_flags = baseline_flags(data, codes)
    plain_s = time.perf_counter() - start
    print("| flagged by | rows flagged | precision | recall | seconds |")
    print("|---|---|---|---|---|")
    for name, flags, seconds in (
        (f"sluice ({config.train.architecture}, out of fold, <= 20 epochs)", sluice_flags, sluice_s),
        ("cleanlab default on plain logistic regression", plain_flags, plain_s),
    ):
        precision, recall, n = precision_recall(flags, flipped)
        print(f"| {name} | {n} | {precision:.2f} | {recall:.2f} | {seconds:.1f} |")

    # The test set keeps its true labels: it measures the model, not the noise.
    train_rows, test_rows = _holdout(data, codes)
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
        metrics = test_metrics(rows, test, config, data)
        print(f"| {name} | {metrics['accuracy']:.4f} | {metrics['f1_macro']:.4f} |")
    clean = test_metrics(train.assign(**{LABEL: train["target"]}), test, config, data)
    print(f"| (no noise planted) | {clean['accuracy']:.4f} | {clean['f1_macro']:.4f} |")


if __name__ == "__main__":
    main()
