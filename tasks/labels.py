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
from tasks.quarantine import check_ids_conserved, empty_quarantine, quarantine_rows, summarise_quarantine


class LabelsConfig(BaseModel):
    """Where labels come from and which classes exist."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["column", "annotation", "none"] = "column"
    """none: the rows need no labels (train.task: generation, where the text is the training signal)."""
    column: str | None = None
    """The source column holding labels (source: column)."""
    classes: list[str] = Field(default_factory=list)
    label_issues: Literal["off", "report", "exclude", "relabel"] = "off"
    """Labels that arrive in a column, checked by cleanlab's find_label_issues on out-of-fold probabilities:
    report the flagged rows, exclude them (quarantined, step label_issues, with their score), or relabel
    them (sent to the Label Studio project `<name>-relabel`; they await its answer, which replaces the
    given label on the next run)."""

    @model_validator(mode="after")
    def _column_given(self) -> LabelsConfig:
        if self.source == "column" and not self.column:
            raise ValueError("labels.source is 'column' but labels.column is not set; name the label column")
        if self.source != "none" and len(self.classes) < 2:
            raise ValueError(f"labels.classes needs at least 2 classes, got {self.classes}; name every class")
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
    relabelled: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Rows whose label a person gave in the relabel project (labels.label_issues: relabel): item_id, reviewer."""

    def distribution(self) -> dict[str, int]:
        if LABEL not in self.data.columns:
            return {}  # labels.source none
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
        if "awaiting_relabel" in self.issues:
            waiting = int(self.issues["awaiting_relabel"].sum())
            lines.append(f"- awaiting relabel in Label Studio: **{waiting}**; relabelled: **{len(self.relabelled)}**")
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


def labels_absent(df: pd.DataFrame) -> LabelOutcome:
    """labels.source none: every clean row goes on to the split as it is, with no label column."""
    empty = df.iloc[0:0]
    return LabelOutcome(
        data=df.reset_index(drop=True),
        quarantine=empty_quarantine(),
        awaiting=empty.reset_index(drop=True),
        source="none",
        rows_in=len(df),
    )


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
    suggested_score: npt.NDArray[np.float64] | None = None,
) -> LabelOutcome:
    """Record the rows cleanlab flags (aligned with `outcome.data`); `exclude` quarantines them with reason and score.

    Flagged rows are never silently dropped: reported, they stay in training; excluded, they are
    quarantined at step label_issues; relabel, they await a person's answer (unless they have one);
    the row account by item id is checked again.
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
    if suggested_score is not None:
        issues["suggested_score"] = np.round(suggested_score[flagged], 4)
    if action == "relabel":
        return _await_relabel(outcome, flagged, issues)
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


def apply_relabels(outcome: LabelOutcome, decisions: pd.DataFrame, classes: list[str]) -> LabelOutcome:
    """Replace given labels with the relabel project's answers (item_id, label, reviewer): a person's answer wins.

    An answer outside the classes is quarantined like any label outside them; the rows stay accounted for.
    """
    data = outcome.data
    latest = decisions.assign(**{ITEM_ID: decisions[ITEM_ID].astype(str)}).drop_duplicates(ITEM_ID, keep="last")
    by_id = latest.set_index(ITEM_ID)
    ids = data[ITEM_ID].astype(str)
    answered = ids.isin(by_id.index).to_numpy()
    answer = ids.map(by_id["label"].astype(str))
    outside = answered & ~answer.isin(classes).to_numpy()
    quarantine = quarantine_rows(
        data[outside],
        step="labels",
        reason=[
            f'relabel answer "{v}" is not one of the classes {", ".join(classes)}; answer the task again '
            "in the relabel project"
            for v in answer[outside]
        ],
    )
    good = answered & ~outside
    relabelled = data[good].assign(**{LABEL: answer[good].to_numpy()})
    kept = pd.concat([data[~answered], relabelled]).sort_index().reset_index(drop=True)
    check_ids_conserved(data[ITEM_ID], stage="relabel", labelled=kept[ITEM_ID], quarantined=quarantine[ITEM_ID])
    return LabelOutcome(
        kept,
        pd.concat([outcome.quarantine, quarantine], ignore_index=True),
        outcome.awaiting,
        outcome.source,
        outcome.rows_in,
        outcome.issues,
        relabelled=pd.DataFrame(
            {ITEM_ID: ids[good].to_numpy(), "reviewer": ids[good].map(by_id["reviewer"].astype(str)).to_numpy()}
        ),
    )


def _await_relabel(outcome: LabelOutcome, flagged: npt.NDArray[np.bool_], issues: pd.DataFrame) -> LabelOutcome:
    """Flagged rows nobody has relabelled yet wait for the relabel project; a person's answer is trained on."""
    data = outcome.data
    answered = data[ITEM_ID].astype(str).isin(outcome.relabelled.get(ITEM_ID, pd.Series(dtype=str))).to_numpy()
    waiting = flagged & ~answered
    kept = data[~waiting].reset_index(drop=True)
    awaiting = pd.concat([outcome.awaiting, data[waiting].drop(columns=[LABEL])], ignore_index=True)
    check_ids_conserved(
        data[ITEM_ID], stage="label_issues", labelled=kept[ITEM_ID], awaiting=data.loc[waiting, ITEM_ID]
    )
    ranked = issues.assign(awaiting_relabel=waiting[flagged]).sort_values("self_confidence", kind="stable")
    return LabelOutcome(
        kept, outcome.quarantine, awaiting, outcome.source, outcome.rows_in, ranked, relabelled=outcome.relabelled
    )
