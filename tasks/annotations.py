"""Turn a Label Studio JSON export into clean annotation rows, accounting for every one.

Label Studio Community enforces `maximum_annotations` only when its labelling stream picks
the next task: a direct POST beyond the limit, or a second one by the same user, is
accepted. So the export is cleaned here, in this order:

1. cancelled (skipped) annotations are counted and left out;
2. the same annotator twice on the same item: the newest is kept (older ones counted);
3. results that are empty, hold several choices, or a label outside the classes go to
   `rejected` with a reason;
4. each item is cut to its first `overlap` distinct annotators (by the time of each one's
   first annotation of it), the ones the stream would have served; the rest are counted.

Nothing is lost: n_raw_annotations == kept + cancelled + duplicates + rejected + over-overlap.
An export with no tasks at all raises (it points at a wrong project or a missed import);
an export whose tasks have no annotations yet gives empty frames.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from tasks.simulate import SimulatorConfig

ANNOTATION_COLUMNS = ["item_id", "task_id", "annotation_id", "annotator", "label", "lead_time", "created_at"]
REJECTED_COLUMNS = [*ANNOTATION_COLUMNS, "reason"]


class AnnotationConfig(BaseModel):
    """Settings of the annotate stage."""

    label_config: Path = Path("label_config/text_classification.xml")
    project_identifier: str = "sluice-demo"
    project_title: str = "sluice demo: fresh or rotten?"
    overlap: int = Field(3, ge=1, description="distinct annotators per item (Label Studio maximum_annotations)")
    batch_size: int = Field(500, ge=1, description="tasks per import call")
    simulate: bool = Field(False, description="label with demo annotators instead of waiting for humans")
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    min_coverage: float = Field(
        1.0, ge=0.0, le=1.0, description="share of items that must have `overlap` annotations to go on"
    )


class EmptyExportError(ValueError):
    """The Label Studio export holds no tasks."""


@dataclass(frozen=True)
class ParsedExport:
    """Annotations kept from an export, the rejected ones with reasons, and the counts."""

    annotations: pd.DataFrame
    rejected: pd.DataFrame
    n_tasks: int
    n_raw_annotations: int
    n_cancelled: int
    n_duplicates_dropped: int
    n_over_overlap_dropped: int

    @property
    def n_kept(self) -> int:
        return len(self.annotations)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)

    def summary(self) -> dict[str, int]:
        """Counts for a report; kept + the four dropped counts == raw."""
        return {
            "tasks": self.n_tasks,
            "raw_annotations": self.n_raw_annotations,
            "kept": self.n_kept,
            "cancelled": self.n_cancelled,
            "duplicates_dropped": self.n_duplicates_dropped,
            "rejected": self.n_rejected,
            "over_overlap_dropped": self.n_over_overlap_dropped,
        }


def parse_export(
    export_json: Sequence[Mapping[str, Any]],
    *,
    classes: Sequence[str],
    id_field: str = "item_id",
    overlap: int | None,
    user_names: Mapping[int, str] | None = None,
) -> ParsedExport:
    """Clean a Label Studio JSON export (a list of tasks) into one row per kept annotation.

    Args:
        export_json: the parsed JSON export (`JSON` type, tasks with `annotations`).
        classes: the allowed labels.
        id_field: the task data field that holds the pipeline's item id.
        overlap: keep at most this many distinct annotators per item; None keeps all.
        user_names: user id -> name, used when `completed_by` is a bare id.

    Raises:
        EmptyExportError: the export holds no tasks.
    """
    if len(export_json) == 0:
        raise EmptyExportError(
            "the Label Studio export holds no tasks; check the project id, or import the items "
            "first (LabelStudioClient.import_items)"
        )
    if overlap is not None and overlap < 1:
        raise ValueError(f"overlap must be at least 1 (or None to keep all), got {overlap}")
    allowed = set(classes)
    rows: list[dict[str, Any]] = []
    n_cancelled = 0
    for task in export_json:
        item_id = (task.get("data") or {}).get(id_field)
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                n_cancelled += 1
                continue
            label, reason = _read_label(ann.get("result") or [], allowed)
            if item_id is None:
                reason = f"task {task.get('id')} has no data.{id_field}"
            rows.append(
                {
                    "item_id": item_id,
                    "task_id": task.get("id"),
                    "annotation_id": ann.get("id"),
                    "annotator": _annotator(ann.get("completed_by"), user_names),
                    "label": label,
                    "lead_time": ann.get("lead_time"),
                    "created_at": ann.get("created_at"),
                    "reason": reason,
                }
            )
    n_raw = n_cancelled + len(rows)
    frame = pd.DataFrame(rows, columns=REJECTED_COLUMNS)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    frame["lead_time"] = pd.to_numeric(frame["lead_time"], errors="coerce").astype("float64")

    # Newest first, so drop_duplicates keeps each annotator's latest word on an item.
    frame = frame.sort_values(["created_at", "annotation_id"], ascending=False, kind="stable")
    deduped = frame.drop_duplicates(subset=["task_id", "annotator"], keep="first")
    # Same annotator on the same item through two tasks (an item imported twice) counts too.
    has_id = deduped["item_id"].notna()
    deduped = pd.concat(
        [deduped[has_id].drop_duplicates(subset=["item_id", "annotator"], keep="first"), deduped[~has_id]]
    )
    n_duplicates = len(frame) - len(deduped)

    rejected = deduped[deduped["reason"].notna()]
    valid = deduped[deduped["reason"].isna()]
    n_over = 0
    if overlap is not None:
        # An annotator's slot on an item dates from their FIRST annotation of it, even when
        # a later one replaced it: re-annotating must not push someone else out.
        first_seen = frame.groupby(["item_id", "annotator"])["created_at"].transform("min")
        valid = valid.assign(_first=first_seen.loc[valid.index]).sort_values(["_first", "annotation_id"], kind="stable")
        rank = valid.groupby("item_id", sort=False).cumcount()
        n_over = int((rank >= overlap).sum())
        valid = valid[rank < overlap]
    valid = valid.sort_values(["item_id", "created_at", "annotation_id"], kind="stable")

    annotations = valid[ANNOTATION_COLUMNS].reset_index(drop=True)
    annotations["label"] = annotations["label"].astype("str")
    return ParsedExport(
        annotations=annotations,
        rejected=rejected[REJECTED_COLUMNS].sort_values(["task_id", "annotation_id"]).reset_index(drop=True),
        n_tasks=len(export_json),
        n_raw_annotations=n_raw,
        n_cancelled=n_cancelled,
        n_duplicates_dropped=n_duplicates,
        n_over_overlap_dropped=n_over,
    )


def load_export(path: Path, *, expected_sha256: str | None = None) -> list[dict[str, Any]]:
    """Read a JSON export kept by `LabelStudioClient.export_snapshot`, checking its hash if given."""
    raw = Path(path).read_bytes()
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise ValueError(
                f"Label Studio export {path} has sha256 {actual[:12]}…, expected {expected_sha256[:12]}…: "
                "the file changed since it was exported; export the project again"
            )
    tasks = json.loads(raw)
    if not isinstance(tasks, list):
        raise ValueError(f"{path} is not a Label Studio JSON export (a list of tasks); export with type JSON")
    return tasks


def compute_coverage(annotations: pd.DataFrame, item_ids: Sequence[Any], overlap: int) -> float:
    """Share of `item_ids` that carry at least `overlap` kept annotations."""
    if len(item_ids) == 0:
        return 1.0
    counts = annotations.groupby("item_id")["annotator"].nunique()
    done = counts[counts >= overlap].index
    return float(pd.Index(item_ids).isin(done).mean())


def _read_label(result: Sequence[Mapping[str, Any]], allowed: set[str]) -> tuple[str | None, str | None]:
    """The single label of a result, or (None, why it is unusable)."""
    values: list[str] = []
    for region in result:
        value = region.get("value") or {}
        for key in ("choices", "labels"):
            values.extend(str(v) for v in value.get(key) or [])
    if not values:
        return None, "empty result (no choice made)"
    if len(set(values)) > 1:
        return None, f"several labels {sorted(set(values))} in one annotation"
    label = values[0]
    if label not in allowed:
        return label, f"label {label!r} is not one of the classes {sorted(allowed)}"
    return label, None


def _annotator(completed_by: Any, user_names: Mapping[int, str] | None) -> str:
    # The snapshot export expands completed_by to {id, email, ...}; the quick export gives the id.
    if isinstance(completed_by, Mapping):
        name = completed_by.get("email") or completed_by.get("username")
        if name:
            return str(name)
        completed_by = completed_by.get("id")
    if user_names and completed_by in user_names:
        return user_names[completed_by]
    return f"user-{completed_by}"
