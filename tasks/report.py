"""The test stage and the run's accounting: metrics, plots, mistakes, and where every row went."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.columns import ITEM_ID
from tasks.evaluate import (
    bootstrap_ci,
    confusion_table,
    evaluate_predictions,
    most_confident_mistakes,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_roc_curve,
)
from tasks.predictor import Predictor
from tasks.promotion import OnnxParity
from tasks.quarantine import check_ids_conserved

HEADLINE_METRICS = [
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
    "roc_auc_ovr_macro",
    "log_loss",
]


@dataclass
class TestReport:
    metrics: dict[str, float]
    confusion: pd.DataFrame
    mistakes: pd.DataFrame
    intervals: dict[str, tuple[float, float]]
    plots: list[Path]
    rows: int
    output_example: pd.DataFrame = field(default_factory=pd.DataFrame)

    def headline(self) -> dict[str, float]:
        return {k: self.metrics[k] for k in HEADLINE_METRICS if k in self.metrics}

    def summary_markdown(self) -> str:
        lines = [
            f"### Test metrics ({self.rows} rows, used once)",
            "",
            "| metric | value | 95% CI |",
            "|---|---|---|",
        ]
        for key, value in self.headline().items():
            low_high = self.intervals.get(key)
            ci = f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else ""
            lines.append(f"| {key} | {value:.4f} | {ci} |")
        lines += ["", "Confusion matrix (rows: true, columns: predicted):", "", self.confusion.to_markdown()]
        return "\n".join(lines)


def score_test_split(
    predictor: Predictor,
    test: pd.DataFrame,
    *,
    label_col: str,
    classes: list[str],
    history: list[dict[str, float]],
    out_dir: Path,
    n_mistakes: int = 20,
    n_boot: int = 500,
    seed: int = 0,
) -> TestReport:
    """Score the model once on the test split: metrics with bootstrap intervals, plots, confident mistakes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    proba = predictor.predict_proba(test)
    y_true = test[label_col].astype(str).tolist()
    metrics = {k: float(v) for k, v in evaluate_predictions(y_true, proba, classes).items()}
    predicted = [classes[i] for i in proba.argmax(axis=1)]
    confusion = confusion_table(y_true, predicted, classes)
    intervals = {
        metric: bootstrap_ci(y_true, proba, classes, metric=metric, n_boot=n_boot, seed=seed)
        for metric in ("accuracy", "f1_macro")
    }
    plots = [
        plot_confusion_matrix(y_true, predicted, classes, out_dir / "confusion_matrix.png"),
        plot_roc_curve(y_true, proba, classes, out_dir / "roc_curve.png"),
        plot_learning_curves(history, out_dir / "learning_curves.png"),
    ]
    mistakes = most_confident_mistakes(test, proba, classes, label_col, n=n_mistakes)
    mistakes.to_csv(out_dir / "confident_mistakes.csv", index=False)
    (out_dir / "test_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    head = proba[:3]
    output_example = pd.DataFrame(head, columns=[f"proba_{c}" for c in classes])
    output_example.insert(0, "label", [classes[i] for i in head.argmax(axis=1)])
    return TestReport(
        metrics=metrics,
        confusion=confusion,
        mistakes=mistakes,
        intervals=intervals,
        plots=plots,
        rows=len(test),
        output_example=output_example,
    )


@dataclass
class RowAccount:
    """Where every raw row went: rows in = trainable (train + val + test) + awaiting + quarantined + gap + holdout."""

    rows_in: int
    trainable: int
    awaiting: int
    quarantined: dict[str, int]
    gap: int = 0
    """Rows a temporal split left between its splits: kept aside in their own file, not trained on."""
    holdout: int = 0
    """Rows of the frozen holdout: labelled, never trained or validated on."""
    splits: dict[str, int] = field(default_factory=dict)
    """Trainable rows per split (or "labelled", before the split ran)."""

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "trainable": self.trainable,
            "awaiting": self.awaiting,
            "quarantined": self.quarantined,
            "quarantined_total": self.quarantined_total,
            "gap": self.gap,
            "holdout": self.holdout,
            "splits": self.splits,
        }


def account_rows(
    snapshot_ids: pd.Series,
    *,
    quarantine: pd.DataFrame,
    awaiting: pd.Series,
    trainable: dict[str, pd.Series],
    gap: pd.Series | None = None,
    holdout: pd.Series | None = None,
) -> RowAccount:
    """The run's row account, checked by item id: every snapshot row sits in exactly one place.

    Args:
        snapshot_ids: the item ids of the snapshot's rows.
        quarantine: the run's quarantine; its "ingest" rows (malformed lines) never had an id and are counted.
        trainable: item ids per split ("train", "val", "test"), or of all labelled rows before the split.
        gap: item ids of a temporal split's gap rows.
        holdout: item ids of the frozen holdout's rows.

    Raises:
        RowsLostError: an item id is missing, doubled or unknown, with examples.
    """
    identified = quarantine[quarantine["step"] != "ingest"]
    gap = gap if gap is not None else pd.Series([], dtype=object)
    holdout = holdout if holdout is not None else pd.Series([], dtype=object)
    check_ids_conserved(
        snapshot_ids,
        stage="the run",
        **trainable,
        awaiting=awaiting,
        gap=gap,
        holdout=holdout,
        quarantined=identified[ITEM_ID],
    )
    return RowAccount(
        rows_in=len(snapshot_ids) + len(quarantine) - len(identified),
        trainable=sum(len(ids) for ids in trainable.values()),
        awaiting=len(awaiting),
        quarantined={str(k): int(v) for k, v in quarantine["step"].value_counts().items()},
        gap=len(gap),
        holdout=len(holdout),
        splits={name: len(ids) for name, ids in trainable.items()},
    )


def export_onnx_checked(predictor: Predictor, sample: pd.DataFrame, path: Path, *, tolerance: float) -> OnnxParity:
    """Export the network to ONNX and measure the largest |logit| difference against PyTorch on `sample`.

    Never raises: a design that cannot export, or an export that disagrees, is reported in the result
    (the promotion gate and the version tags read it).
    """
    try:
        import onnxruntime as ort  # only here: serving and training never need it
        import torch

        predictor.export_onnx(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (onnx_logits,) = session.run(None, predictor.onnx_inputs(sample))
        with torch.inference_mode():
            torch_logits = predictor.logits(predictor.encode(sample)).cpu().numpy()
    except Exception as exc:  # an optional extra: a failed export must not lose the trained model
        return OnnxParity(gap=None, tolerance=tolerance, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    gap = float(abs(onnx_logits - torch_logits).max()) if len(sample) else 0.0
    return OnnxParity(gap=gap, tolerance=tolerance)
