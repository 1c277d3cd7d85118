"""Score a classifier's probabilities: metrics, confusion matrix, plots, worst mistakes, bootstrap CIs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tasks.columns import ITEM_ID


def _as_indices(y: Sequence[str] | np.ndarray | pd.Series, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    values = [str(v) for v in y]
    unknown = sorted({v for v in values if v not in index})
    if unknown:
        raise ValueError(f"labels {unknown[:10]} are not in classes {classes}; evaluate with the model's classes")
    return np.asarray([index[v] for v in values], dtype=np.int64)


def _check_proba(proba: np.ndarray, n_rows: int, classes: list[str]) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n_rows, len(classes)):
        raise ValueError(
            f"proba has shape {proba.shape}; expected ({n_rows}, {len(classes)}): one row per label, "
            "one column per class in classes order"
        )
    return proba


def evaluate_predictions(
    y_true: Sequence[str] | np.ndarray | pd.Series, proba: np.ndarray, classes: list[str]
) -> dict[str, float]:
    """Flat float metrics from true labels and class probabilities (columns in `classes` order).

    Keys: accuracy, balanced_accuracy, {precision,recall,f1}_{macro,weighted}, log_loss, brier,
    roc_auc (binary: the second class is positive) and roc_auc_ovr_macro (both for binary), and per
    class f1_<class>, precision_<class>, recall_<class>, support_<class>. An AUC that is undefined
    (one class absent from y_true) is NaN.
    """
    y = _as_indices(y_true, classes)
    proba = _check_proba(proba, len(y), classes)
    pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    out: dict[str, float] = {
        "n": float(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(_balanced_accuracy(y, pred, len(classes))),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=average, zero_division=0)
        out[f"precision_{average}"], out[f"recall_{average}"], out[f"f1_{average}"] = (
            float(p),
            float(r),
            float(f),
        )
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, average=None, zero_division=0)
    for i, name in enumerate(classes):
        out[f"precision_{name}"], out[f"recall_{name}"] = float(p[i]), float(r[i])
        out[f"f1_{name}"], out[f"support_{name}"] = float(f[i]), float(s[i])
    clipped = np.clip(proba, 1e-15, 1.0)
    out["log_loss"] = float(skm.log_loss(y, clipped / clipped.sum(1, keepdims=True), labels=labels))
    out["brier"] = float(np.mean(np.sum((proba - np.eye(len(classes))[y]) ** 2, axis=1)))
    present = np.unique(y)
    if len(classes) == 2:
        auc = float(skm.roc_auc_score(y, proba[:, 1])) if len(present) == 2 else float("nan")
        out["roc_auc"] = out["roc_auc_ovr_macro"] = auc
    else:
        out["roc_auc_ovr_macro"] = _ovr_macro_auc(y, proba, len(classes))
    return out


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    recalls = [np.mean(pred[y == k] == k) for k in range(n_classes) if np.any(y == k)]
    return float(np.mean(recalls)) if recalls else float("nan")


def _ovr_macro_auc(y: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    # One-vs-rest per class that is present and not the only one; sklearn refuses missing classes outright.
    aucs = []
    for k in range(n_classes):
        positive = y == k
        if positive.any() and (~positive).any():
            aucs.append(skm.roc_auc_score(positive, proba[:, k]))
    return float(np.mean(aucs)) if aucs else float("nan")


def confusion_table(
    y_true: Sequence[str] | np.ndarray | pd.Series,
    y_pred: Sequence[str] | np.ndarray | pd.Series,
    classes: list[str],
    *,
    normalize: bool = False,
) -> pd.DataFrame:
    """Counts (or row-normalised rates) with true classes as rows and predicted classes as columns."""
    cm = skm.confusion_matrix(
        _as_indices(y_true, classes), _as_indices(y_pred, classes), labels=list(range(len(classes)))
    )
    table = pd.DataFrame(cm, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))
    if normalize:
        table = table.div(table.sum(axis=1).replace(0, 1), axis=0)
    return table


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and a GUI backend would fail in a worker
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(
    y_true: Sequence[str] | np.ndarray | pd.Series,
    y_pred: Sequence[str] | np.ndarray | pd.Series,
    classes: list[str],
    path: Path,
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Save the confusion matrix (counts, with row percentages) as a PNG."""
    plt = _pyplot()
    table = confusion_table(y_true, y_pred, classes)
    rates = confusion_table(y_true, y_pred, classes, normalize=True).to_numpy()
    counts = table.to_numpy()
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{rates[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, plt, path)


def plot_roc_curve(
    y_true: Sequence[str] | np.ndarray | pd.Series, proba: np.ndarray, classes: list[str], path: Path
) -> Path:
    """Save ROC curves as a PNG: the positive (second) class for binary, one-vs-rest per class otherwise."""
    plt = _pyplot()
    y = _as_indices(y_true, classes)
    proba = _check_proba(proba, len(y), classes)
    fig, ax = plt.subplots(figsize=(5, 5))
    targets = [1] if len(classes) == 2 else list(range(len(classes)))
    for k in targets:
        positive = y == k
        if not positive.any() or positive.all():
            continue  # ROC is undefined without both outcomes
        fpr, tpr, _ = skm.roc_curve(positive, proba[:, k])
        ax.plot(fpr, tpr, label=f"{classes[k]} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, plt, path)


def plot_learning_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Save loss (train and val) and val accuracy/F1 per epoch as a PNG."""
    plt = _pyplot()
    frame = pd.DataFrame(history)
    if frame.empty:
        raise ValueError("history is empty: there is nothing to plot; train for at least one epoch")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        if key in frame:
            left.plot(frame["epoch"], frame[key], marker="o", label=key)
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    for key in ("val_accuracy", "val_f1_macro"):
        if key in frame:
            right.plot(frame["epoch"], frame[key], marker="o", label=key)
    right.set_xlabel("epoch")
    right.set_ylabel("score")
    right.legend()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)  # figures are global state in pyplot; a long flow would leak them
    return path


def most_confident_mistakes(
    df: pd.DataFrame,
    proba: np.ndarray,
    classes: list[str],
    label_col: str,
    n: int = 20,
    *,
    text_col: str | None = "text",
) -> pd.DataFrame:
    """The `n` wrong predictions the model was surest of: columns item_id (if present), text (if
    present), true, predicted, confidence; most confident first. Often label errors worth a review."""
    if label_col not in df.columns:
        raise KeyError(f"column {label_col!r} is missing from the frame (it has {list(df.columns)})")
    proba = _check_proba(proba, len(df), classes)
    pred = proba.argmax(axis=1)
    out = pd.DataFrame(index=range(len(df)))
    if ITEM_ID in df.columns:
        out[ITEM_ID] = df[ITEM_ID].to_numpy()
    if text_col and text_col in df.columns:
        out["text"] = df[text_col].to_numpy()
    out["true"] = df[label_col].astype(str).to_numpy()
    out["predicted"] = np.asarray(classes, dtype=object)[pred]
    out["confidence"] = proba.max(axis=1)
    wrong = out[out["true"] != out["predicted"]]
    return wrong.sort_values("confidence", ascending=False, kind="stable").head(n).reset_index(drop=True)


def bootstrap_ci(
    y_true: Sequence[str] | np.ndarray | pd.Series,
    proba: np.ndarray,
    classes: list[str],
    metric: str = "f1_macro",
    n_boot: int = 1000,
    seed: int = 0,
    *,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric from `evaluate_predictions` (resampling rows).

    The metric is computed with numpy for accuracy/F1/precision/recall (fast); other keys fall back to
    `evaluate_predictions` per resample.
    """
    y = _as_indices(y_true, classes)
    proba = _check_proba(proba, len(y), classes)
    if len(y) == 0:
        raise ValueError("no rows to bootstrap; evaluate on a non-empty set")
    rng = np.random.default_rng(seed)
    pred = proba.argmax(axis=1)
    k = len(classes)
    fast = _fast_metric(metric, classes)
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if fast is not None:
            cm = np.bincount(y[idx] * k + pred[idx], minlength=k * k).reshape(k, k)
            values[b] = fast(cm)
        else:
            values[b] = evaluate_predictions(np.asarray(classes)[y[idx]], proba[idx], classes)[metric]
    values = values[~np.isnan(values)]
    if len(values) == 0:
        raise ValueError(f"metric {metric!r} is undefined on every resample (one class only?)")
    alpha = (1.0 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _fast_metric(metric: str, classes: list[str]) -> Any:
    """A confusion-matrix -> value function for the cheap metrics, else None."""

    def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        tp = np.diag(cm).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
            recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        return precision, recall, f1, cm.sum(1).astype(float)

    if metric == "accuracy":
        return lambda cm: np.trace(cm) / cm.sum()
    for name, pos in (("precision", 0), ("recall", 1), ("f1", 2)):
        if metric == f"{name}_macro":
            return lambda cm, pos=pos: float(np.mean(per_class(cm)[pos]))
        if metric == f"{name}_weighted":
            return lambda cm, pos=pos: float(np.average(per_class(cm)[pos], weights=per_class(cm)[3]))
        for i, c in enumerate(classes):
            if metric == f"{name}_{c}":
                return lambda cm, pos=pos, i=i: float(per_class(cm)[pos][i])
    return None
