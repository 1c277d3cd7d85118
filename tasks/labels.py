"""Labels: the boundary where training labels enter, from a source column or from annotation.

Both sources give the same thing to the split stage: the clean rows with a
`sluice_label` column (`tasks.columns.LABEL`) holding one of the configured classes; the
source's own columns, a column named `label` included, keep their values. Rows whose label
is outside the classes are quarantined; rows still waiting for annotators are kept aside,
counted, and not trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.columns import ITEM_ID, LABEL
from tasks.ingest import values_as_text
from tasks.quarantine import check_ids_conserved, quarantine_rows, summarise_quarantine


class LabelsConfig(BaseModel):
    """Where labels come from and which classes exist."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["column", "annotation"] = "column"
    column: str | None = None
    """The source column holding labels (source: column)."""
    classes: list[str] = Field(min_length=2)
    label_issues: Literal["off", "report", "exclude"] = "off"
    """Labels that arrive in a column, checked by cleanlab's find_label_issues on out-of-fold probabilities:
    report the flagged rows, or exclude them (quarantined, step label_issues, with their score)."""

    @model_validator(mode="after")
    def _column_given(self) -> LabelsConfig:
        if self.source == "column" and not self.column:
            raise ValueError("labels.source is 'column' but labels.column is not set; name the label column")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"labels.classes has repeated names: {self.classes}")
        return self


class LabelError(ValueError):
    """Labels cannot be resolved; the message says what to change."""


@dataclass
class LabelOutcome:
    data: pd.DataFrame
    """Rows with a training label (`LABEL`) in the classes: what the split stage receives."""
    quarantine: pd.DataFrame
    awaiting: pd.DataFrame
    """Rows with no label yet (annotation still in progress): kept aside, not lost."""
    source: str
    rows_in: int
    issues: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Rows cleanlab flags as likely mislabelled: item_id, given label, suggested label, self-confidence."""

    def distribution(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.data[LABEL].value_counts().sort_index().items()}

    def summary_markdown(self) -> str:
        lines = [
            f"### Labels (source: {self.source})",
            "",
            f"- rows in: **{self.rows_in}**, labelled: **{len(self.data)}**, "
            f"awaiting annotation: **{len(self.awaiting)}**, quarantined: **{len(self.quarantine)}**",
            "- distribution: " + ", ".join(f"{k}: {v}" for k, v in self.distribution().items()),
        ]
        if len(self.issues):
            lines.append(f"- likely label errors (cleanlab find_label_issues): **{len(self.issues)}**")
        counts = summarise_quarantine(self.quarantine)
        if not counts.empty:
            lines += ["", "| reason | rows |", "|---|---|"]
            lines += [f"| {r.reason} | {r.rows} |" for r in counts.itertuples()]
        return "\n".join(lines)


def _split_by_class(df: pd.DataFrame, labels: pd.Series, classes: list[str], source: str) -> LabelOutcome:
    rows_in = len(df)
    labels = values_as_text(labels)  # 1 and 1.0 (an integer column with a gap) both mean class "1"
    awaiting_mask = labels.isna()
    outside = ~awaiting_mask & ~labels.isin(classes)
    bad = df[outside]
    quarantine = quarantine_rows(
        bad,
        step="labels",
        reason=[
            f'label "{v}" ({source}) is not one of the classes {", ".join(classes)}; fix the row, '
            "or add the class to labels.classes"
            for v in labels[outside]
        ],
    )
    keep = ~awaiting_mask & ~outside
    data = df[keep].assign(**{LABEL: labels[keep]}).reset_index(drop=True)
    awaiting = df[awaiting_mask].reset_index(drop=True)
    check_ids_conserved(
        df[ITEM_ID],
        stage="labels",
        labelled=data[ITEM_ID],
        awaiting=awaiting[ITEM_ID],
        quarantined=quarantine[ITEM_ID],
    )
    return LabelOutcome(data=data, quarantine=quarantine, awaiting=awaiting, source=source, rows_in=rows_in)


def labels_from_column(df: pd.DataFrame, config: LabelsConfig) -> LabelOutcome:
    """Labels already in the data: rows with an empty label wait, labels outside the classes are quarantined."""
    column = config.column or ""
    if column not in df.columns:
        raise LabelError(
            f'label column "{column}" (labels.column) is missing from the clean data; available columns: '
            f"{', '.join(map(str, df.columns))}."
        )
    return _split_by_class(df, df[column], config.classes, source=f"column {column}")


def labels_from_annotation(df: pd.DataFrame, consensus: pd.DataFrame, config: LabelsConfig) -> LabelOutcome:
    """Labels from the annotation stage's consensus table (`item_id`, `label`); items not in it wait."""
    if not {ITEM_ID, "label"} <= set(consensus.columns):
        raise LabelError("the consensus label table needs columns item_id and label; rerun the annotation flow.")
    by_id = consensus.drop_duplicates(ITEM_ID, keep="last").set_index(ITEM_ID)["label"]
    return _split_by_class(df, df[ITEM_ID].map(by_id), config.classes, source="annotation consensus")


def apply_label_issues(
    outcome: LabelOutcome,
    flagged: npt.NDArray[np.bool_],
    confidence: npt.NDArray[np.float64],
    suggested: Sequence[str],
    action: str,
) -> LabelOutcome:
    """Record the rows cleanlab flags (aligned with `outcome.data`); `exclude` quarantines them with reason and score.

    Flagged rows are never silently dropped: reported, they stay in training; excluded, they are
    quarantined at step label_issues, and the row account by item id is checked again.
    """
    data = outcome.data
    issues = pd.DataFrame(
        {
            ITEM_ID: data.loc[flagged, ITEM_ID].astype(str).to_numpy(),
            "label": data.loc[flagged, LABEL].astype(str).to_numpy(),
            "suggested": np.asarray(suggested, dtype=object)[flagged],
            "self_confidence": np.round(confidence[flagged], 4),
        }
    )
    if action != "exclude" or not flagged.any():
        ranked = issues.sort_values("self_confidence", kind="stable")
        return LabelOutcome(outcome.data, outcome.quarantine, outcome.awaiting, outcome.source, outcome.rows_in, ranked)
    bad = data[flagged]
    reasons = [
        f'label "{label}" is likely wrong: the model gives it probability {score:.3f} and suggests "{hint}" '
        "(cleanlab find_label_issues); fix the label, or set labels.label_issues: report to keep the row"
        for label, score, hint in zip(issues["label"], issues["self_confidence"], issues["suggested"], strict=True)
    ]
    quarantine = pd.concat(
        [outcome.quarantine, quarantine_rows(bad, step="label_issues", reason=reasons)], ignore_index=True
    )
    kept = data[~flagged].reset_index(drop=True)
    check_ids_conserved(
        data[ITEM_ID],
        stage="label_issues",
        labelled=kept[ITEM_ID],
        quarantined=bad[ITEM_ID],
    )
    ranked = issues.sort_values("self_confidence", kind="stable")
    return LabelOutcome(kept, quarantine, outcome.awaiting, outcome.source, outcome.rows_in, ranked)
