"""Evaluation: metrics against hand-computed values, tables, plots, mistakes and confidence intervals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.evaluate import (
    bootstrap_ci,
    confusion_table,
    evaluate_predictions,
    most_confident_mistakes,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_roc_curve,
)

BINARY = ["rotten", "fresh"]
# 4 rows: two right with confidence, one right barely, one wrong.
Y_TRUE = ["fresh", "fresh", "rotten", "rotten"]
PROBA = np.array([[0.1, 0.9], [0.6, 0.4], [0.8, 0.2], [0.45, 0.55]])
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_binary_metrics_match_hand_computation() -> None:
    m = evaluate_predictions(Y_TRUE, PROBA, BINARY)
    # predictions: fresh, rotten, rotten, fresh -> 2 of 4 right
    assert m["accuracy"] == pytest.approx(0.5)
    # fresh: tp=1, fp=1, fn=1 -> P=R=F1=0.5; rotten likewise
    assert m["precision_fresh"] == pytest.approx(0.5)
    assert m["recall_rotten"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx(0.5)
    assert m["f1_weighted"] == pytest.approx(0.5)
    # AUC: positives (fresh) score 0.9, 0.4; negatives 0.2, 0.55 -> 3 of 4 pairs ordered right
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["roc_auc_ovr_macro"] == m["roc_auc"]
    expected_log_loss = -np.mean(np.log([0.9, 0.4, 0.8, 0.45]))
    assert m["log_loss"] == pytest.approx(expected_log_loss)
    assert all(isinstance(v, float) for v in m.values())


def test_perfect_multiclass_predictions_score_one() -> None:
    classes = ["a", "b", "c"]
    y = ["a", "b", "c", "a"]
    proba = np.eye(3)[[0, 1, 2, 0]] * 0.9 + 0.1 / 3
    m = evaluate_predictions(y, proba, classes)
    assert m["accuracy"] == m["f1_macro"] == m["roc_auc_ovr_macro"] == 1.0
    assert "roc_auc" not in m
    assert {"f1_a", "precision_b", "recall_c", "f1_weighted", "precision_macro", "recall_macro"} <= set(m)


def test_auc_is_nan_when_only_one_class_is_present() -> None:
    m = evaluate_predictions(["fresh", "fresh"], np.array([[0.2, 0.8], [0.6, 0.4]]), BINARY)
    assert math.isnan(m["roc_auc"])
    assert m["accuracy"] == 0.5


def test_bad_inputs_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="'meh'"):
        evaluate_predictions(["meh"] * 4, PROBA, BINARY)
    with pytest.raises(ValueError, match="one column per class"):
        evaluate_predictions(Y_TRUE, PROBA[:, :1], BINARY)


def test_confusion_table_rows_are_truth_columns_predictions() -> None:
    table = confusion_table(["a", "a", "b", "c"], ["a", "b", "b", "a"], ["a", "b", "c"])
    assert table.loc["a", "b"] == 1  # one true a predicted as b
    assert table.loc["c", "a"] == 1
    assert table.loc["c", "c"] == 0
    assert int(table.to_numpy().sum()) == 4
    rates = confusion_table(["a", "a", "b", "c"], ["a", "b", "b", "a"], ["a", "b", "c"], normalize=True)
    np.testing.assert_allclose(rates.sum(axis=1), 1.0)


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    history = [
        {"epoch": 1.0, "train_loss": 0.7, "val_loss": 0.6, "val_accuracy": 0.6, "val_f1_macro": 0.55},
        {"epoch": 2.0, "train_loss": 0.5, "val_loss": 0.55, "val_accuracy": 0.7, "val_f1_macro": 0.68},
    ]
    paths = [
        plot_confusion_matrix(Y_TRUE, ["fresh", "rotten", "rotten", "fresh"], BINARY, tmp_path / "cm.png"),
        plot_roc_curve(Y_TRUE, PROBA, BINARY, tmp_path / "roc.png"),
        plot_roc_curve(["a", "b", "c"], np.eye(3), ["a", "b", "c"], tmp_path / "nested" / "roc3.png"),
        plot_learning_curves(history, tmp_path / "curves.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="history is empty"):
        plot_learning_curves([], tmp_path / "none.png")


def test_most_confident_mistakes_come_first() -> None:
    df = pd.DataFrame({"item_id": ["i1", "i2", "i3", "i4"], "text": ["w", "x", "y", "z"], "label": Y_TRUE})
    mistakes = most_confident_mistakes(df, PROBA, BINARY, "label", n=5)
    assert list(mistakes.columns) == ["item_id", "text", "true", "predicted", "confidence"]
    assert mistakes["item_id"].tolist() == ["i2", "i4"]  # 0.60 sure, then 0.55 sure; right answers excluded
    assert mistakes["confidence"].tolist() == pytest.approx([0.6, 0.55])
    assert len(most_confident_mistakes(df, PROBA, BINARY, "label", n=1)) == 1


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_data() -> None:
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[list[str], np.ndarray]:
        y = rng.integers(0, 2, n)
        right = rng.random(n) < 0.8
        pred = np.where(right, y, 1 - y)
        proba = np.column_stack([1 - pred, pred]) * 0.8 + 0.1
        return [BINARY[i] for i in y], proba

    y_small, p_small = sample(100)
    y_big, p_big = sample(2000)
    low, high = bootstrap_ci(y_small, p_small, BINARY, metric="accuracy", n_boot=300, seed=1)
    point = evaluate_predictions(y_small, p_small, BINARY)["accuracy"]
    assert low < point < high
    big_low, big_high = bootstrap_ci(y_big, p_big, BINARY, metric="f1_macro", n_boot=300, seed=1)
    assert big_high - big_low < high - low
    assert bootstrap_ci(y_small, p_small, BINARY, metric="accuracy", n_boot=300, seed=1) == (low, high)
    ll_low, ll_high = bootstrap_ci(y_small, p_small, BINARY, metric="log_loss", n_boot=50, seed=1)
    assert ll_low < evaluate_predictions(y_small, p_small, BINARY)["log_loss"] < ll_high
