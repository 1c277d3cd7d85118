"""Per-annotator telemetry: how much, how fast and how well each person labels.

One row per annotator: items done, median seconds per item (Label Studio's `lead_time`, the
time the labelling screen was open), accuracy on gold items, Cohen's kappa against the others'
majority, and a quality score. The quality score is the annotator's agreement with the
leave-one-out majority (`tasks.agreement.annotator_agreement`); `crowdlab_quality` is cleanlab's
CROWDLAB annotator quality (`with_crowdlab_quality`), filled once consensus has been scored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

TELEMETRY_COLUMNS = [
    "annotator",
    "status",
    "items_done",
    "median_lead_time_s",
    "gold_items",
    "gold_accuracy",
    "kappa",
    "agreement",
    "quality_score",
    "crowdlab_quality",
    "reason",
]


def annotator_telemetry(
    annotations: pd.DataFrame,
    per_annotator: pd.DataFrame,
    gold_scores: pd.DataFrame,
    *,
    excluded: Mapping[str, str] | None = None,
    removed: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per annotator with their volume, speed, gold accuracy, kappa and quality score.

    Args:
        annotations: every kept annotation, gold items included: annotator, lead_time (seconds).
        per_annotator: `AgreementReport.per_annotator` (annotator, agreement, kappa).
        gold_scores: `tasks.consensus.score_gold` (annotator, gold_items, gold_accuracy).
        excluded: annotator -> why they are left out of consensus.
        removed: annotators taken out of the labelling stream (their annotations stay).

    Returns:
        The TELEMETRY_COLUMNS, lowest quality score first (the one to look at).
    """
    excluded = dict(excluded or {})
    names = sorted(
        set(annotations["annotator"].astype(str)) | set(per_annotator["annotator"].astype(str)) | set(excluded)
    )
    by_name = annotations.assign(annotator=annotations["annotator"].astype(str)).groupby("annotator")
    table = pd.DataFrame({"annotator": names})
    table["items_done"] = table["annotator"].map(by_name.size()).fillna(0).astype("int64")
    table["median_lead_time_s"] = table["annotator"].map(by_name["lead_time"].median()).astype("float64")
    gold = gold_scores.set_index(gold_scores["annotator"].astype(str))
    table["gold_items"] = table["annotator"].map(gold["gold_items"]).fillna(0).astype("int64")
    table["gold_accuracy"] = table["annotator"].map(gold["gold_accuracy"]).astype("float64")
    agreement = per_annotator.set_index(per_annotator["annotator"].astype(str))
    table["kappa"] = table["annotator"].map(agreement["kappa"]).astype("float64")
    table["agreement"] = table["annotator"].map(agreement["agreement"]).astype("float64")
    table["quality_score"] = table["agreement"]
    table["crowdlab_quality"] = np.nan  # filled by with_crowdlab_quality once consensus is scored
    gone = set(removed)
    table["status"] = [
        "excluded" if name in excluded else "removed" if name in gone else "active" for name in table["annotator"]
    ]
    table["reason"] = [excluded.get(name, "") for name in table["annotator"]]
    return table.sort_values(["quality_score", "annotator"], na_position="last", kind="stable").reset_index(drop=True)[
        TELEMETRY_COLUMNS
    ]


def with_crowdlab_quality(table: pd.DataFrame, annotators: pd.DataFrame | None) -> pd.DataFrame:
    """The telemetry table with `crowdlab_quality` from CROWDLAB's annotator stats (annotator, crowdlab_quality)."""
    if annotators is None or annotators.empty:
        return table
    by_name = annotators.set_index(annotators["annotator"].astype(str))["crowdlab_quality"]
    return table.assign(crowdlab_quality=table["annotator"].astype(str).map(by_name).astype("float64"))


def telemetry_markdown(table: pd.DataFrame) -> str:
    """The annotators section of the agreement report: the telemetry table and who is excluded, and why."""
    lines = [
        "### Annotators: volume, speed, gold and quality (lowest quality first)",
        "",
        "| annotator | status | items done | median s/item | gold items | gold accuracy | kappa | quality "
        "| CROWDLAB quality |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        cells = [_fmt(row.median_lead_time_s, "{:.1f}"), _fmt(row.gold_accuracy, "{:.0%}"), _fmt(row.kappa, "{:.3f}")]
        lines.append(
            f"| {row.annotator} | {row.status} | {row.items_done} | {cells[0]} | {row.gold_items} | {cells[1]} | "
            f"{cells[2]} | {_fmt(row.quality_score, '{:.3f}')} | {_fmt(row.crowdlab_quality, '{:.3f}')} |"
        )
    excluded = table[table["status"] == "excluded"]
    if len(excluded):
        lines += ["", "Excluded from consensus and taken out of the labelling stream:", ""]
        lines += [f"- {row.annotator}: {row.reason}" for row in excluded.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _fmt(value: object, pattern: str) -> str:
    number = float(str(value))
    return "-" if np.isnan(number) else pattern.format(number)


def telemetry_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Telemetry as MLflow metrics: `annotator_<name>_<measure>`, names made metric-safe, NaN left out."""
    metrics: dict[str, float] = {}
    measures = ("items_done", "median_lead_time_s", "gold_accuracy", "kappa", "quality_score", "crowdlab_quality")
    for row in table.itertuples(index=False):
        # Annotators are e-mail addresses; MLflow metric names allow no "@".
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(row.annotator))
        for measure in measures:
            value = float(getattr(row, measure))
            if not np.isnan(value):
                metrics[f"annotator_{name}_{measure}"] = value
    return metrics


def plot_annotator_telemetry(table: pd.DataFrame, path: Path) -> Path:
    """Agreement against median seconds per item, one labelled point per annotator (PNG); returns `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = table["status"].map({"active": "tab:blue", "excluded": "tab:red", "removed": "tab:grey"})
    most = int(table["items_done"].max()) if len(table) else 1  # an empty table still gets its (empty) plot
    sizes = 30.0 + 170.0 * table["items_done"] / max(most, 1)
    ax.scatter(table["median_lead_time_s"], table["quality_score"], s=sizes, c=colours.fillna("tab:blue"), alpha=0.8)
    shown = table.dropna(subset=["median_lead_time_s", "quality_score"])
    for name, done, x, y in shown[["annotator", "items_done", "median_lead_time_s", "quality_score"]].itertuples(
        index=False
    ):
        ax.annotate(f"{name} ({done})", (float(x), float(y)), fontsize=8, xytext=(5, 4), textcoords="offset points")
    ax.set_xlabel("median seconds per item (lead_time)")
    ax.set_ylabel("agreement with the others' majority")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Annotators: agreement and speed (size: items done; red: excluded, grey: removed)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path
