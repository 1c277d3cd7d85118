"""Turn a Label Studio JSON export into clean annotation rows, accounting for every one.

Label Studio Community enforces `maximum_annotations` only when its labelling stream picks
the next task: a direct POST beyond the limit, or a second one by the same user, is
accepted. So the export is cleaned here, in this order:

1. cancelled (skipped) annotations are counted and left out;
2. the same annotator twice on the same item: the newest is kept (older ones counted);
3. results that are empty, hold several choices, or a label outside the classes go to
   `rejected` with a reason;
4. annotators excluded from consensus (they failed the gold check) are counted and left out;
5. each item is cut to its first `overlap` distinct annotators (by the time of each one's
   first annotation of it), the ones the stream would have served; the rest are counted.

Nothing is lost: n_raw_annotations == kept + cancelled + duplicates + rejected + excluded + over-overlap.

Gold items (`annotation.gold`: items with known labels, mixed into the stream) are not the
user's rows: they are told apart by their item ids, parsed on their own, and only score the
annotators (`parse_with_gold`).
An export with no tasks at all raises (it points at a wrong project or a missed import);
an export whose tasks have no annotations yet gives empty frames.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from tasks.consensus import ConsensusConfig, gold_exclusions, score_gold
from tasks.simulate import SimulatorConfig

ANNOTATION_COLUMNS = ["item_id", "task_id", "annotation_id", "annotator", "label", "lead_time", "created_at"]
REJECTED_COLUMNS = [*ANNOTATION_COLUMNS, "reason"]


class AnnotationConfig(BaseModel):
    """Settings of the annotate stage."""

    label_config: Path = Path("label_config/text_classification.xml")
    project_identifier: str = "sluice-demo"
    project_title: str = "sluice demo: fresh or rotten?"
    overlap: int = Field(3, ge=1, description="the most distinct annotators an item gets")
    overlap_min: int | None = Field(
        None,
        ge=1,
        description="annotators every item starts with (Label Studio maximum_annotations); ActiveLab asks for "
        "one more where it is worth more than a first label elsewhere, up to `overlap`. None: always `overlap`",
    )
    extra_share: float = Field(
        0.25, ge=0.0, le=1.0, description="at most this share of the items get one more annotator per sync"
    )
    batch_size: int = Field(500, ge=1, description="tasks per import call")
    simulate: bool = Field(False, description="label with demo annotators instead of waiting for humans")
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    min_coverage: float = Field(
        1.0, ge=0.0, le=1.0, description="share of items that must have `overlap` annotations to go on"
    )
    gold: Path | None = Field(
        None, description="a CSV, JSONL or Parquet file of gold items: the text column and their known `label`"
    )
    gold_rate: float = Field(
        0.05, ge=0.0, lt=1.0, description="share of the labelling stream's tasks that are gold items"
    )

    @property
    def start_overlap(self) -> int:
        """Annotators each task starts with: the project's maximum_annotations, never changed after import."""
        return min(self.overlap_min or self.overlap, self.overlap)


class GoldFileError(ValueError):
    """The gold file cannot be used; the message names the file, the column and the fix."""


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
    n_excluded: int = 0

    @property
    def n_kept(self) -> int:
        return len(self.annotations)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)

    def summary(self) -> dict[str, int]:
        """Counts for a report; kept + the dropped counts == raw."""
        return {
            "tasks": self.n_tasks,
            "raw_annotations": self.n_raw_annotations,
            "kept": self.n_kept,
            "cancelled": self.n_cancelled,
            "duplicates_dropped": self.n_duplicates_dropped,
            "rejected": self.n_rejected,
            "excluded": self.n_excluded,
            "over_overlap_dropped": self.n_over_overlap_dropped,
        }


def parse_export(
    export_json: Sequence[Mapping[str, Any]],
    *,
    classes: Sequence[str],
    id_field: str = "item_id",
    overlap: int | None,
    user_names: Mapping[int, str] | None = None,
    excluded: Collection[str] = (),
) -> ParsedExport:
    """Clean a Label Studio JSON export (a list of tasks) into one row per kept annotation.

    Args:
        export_json: the parsed JSON export (`JSON` type, tasks with `annotations`).
        classes: the allowed labels.
        id_field: the task data field that holds the pipeline's item id.
        overlap: keep at most this many distinct annotators per item; None keeps all.
        user_names: user id -> name, used when `completed_by` is a bare id.
        excluded: annotators left out before the overlap cut, so the ones who replace them count.

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
    left_out = valid["annotator"].isin(set(excluded))
    n_excluded = int(left_out.sum())
    valid = valid[~left_out]
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
        n_excluded=n_excluded,
    )


@dataclass(frozen=True)
class SyncedAnnotations:
    """An export split into the user's items and the gold items, with each annotator's gold score."""

    items: ParsedExport
    """The user's items: excluded annotators left out, cut to `overlap` annotators (consensus reads this)."""
    everyone: ParsedExport
    """The user's items with every annotator and no overlap cut: what each person did."""
    gold: ParsedExport | None
    gold_scores: pd.DataFrame
    excluded: dict[str, str] = field(default_factory=dict)
    """annotator -> why they are left out of consensus."""

    def all_annotations(self) -> pd.DataFrame:
        """Every annotation each person made, gold answers included."""
        frames = [self.everyone.annotations] + ([self.gold.annotations] if self.gold is not None else [])
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def gold_item_ids(self) -> set[str]:
        return set() if self.gold is None else set(self.gold.annotations["item_id"].astype(str))


def parse_with_gold(
    export_json: Sequence[Mapping[str, Any]],
    *,
    classes: Sequence[str],
    overlap: int,
    gold: pd.DataFrame | None,
    consensus: ConsensusConfig,
    user_names: Mapping[int, str] | None = None,
    id_field: str = "item_id",
) -> SyncedAnnotations:
    """Parse an export whose stream mixes gold items in: score annotators on gold, exclude the weak ones.

    Gold tasks are parsed without an overlap cut (every annotator is served each gold item);
    the user's items are parsed with the excluded annotators left out before the cut.
    """
    gold_ids = set(gold["item_id"].astype(str)) if gold is not None else set()
    is_gold = [str((task.get("data") or {}).get(id_field)) in gold_ids for task in export_json]
    gold_tasks = [task for task, flag in zip(export_json, is_gold, strict=True) if flag]
    user_tasks = [task for task, flag in zip(export_json, is_gold, strict=True) if not flag]
    gold_parsed = None
    scores = score_gold(pd.DataFrame(columns=["item_id", "annotator", "label"]), pd.DataFrame(columns=["item_id"]))
    if gold is not None and gold_tasks:
        gold_parsed = parse_export(gold_tasks, classes=classes, id_field=id_field, overlap=None, user_names=user_names)
        scores = score_gold(gold_parsed.annotations, gold)
    excluded = gold_exclusions(scores, consensus)
    common: dict[str, Any] = {"classes": classes, "id_field": id_field, "user_names": user_names}
    items = parse_export(user_tasks, overlap=overlap, excluded=excluded, **common)
    everyone = parse_export(user_tasks, overlap=None, **common) if excluded else items
    return SyncedAnnotations(items=items, everyone=everyone, gold=gold_parsed, gold_scores=scores, excluded=excluded)


def reopen_overlaps(
    export_json: Sequence[Mapping[str, Any]],
    excluded: Collection[str],
    *,
    overlap: int,
    skip_items: Collection[str] = (),
    id_field: str = "item_id",
    user_names: Mapping[int, str] | None = None,
) -> dict[int, int]:
    """Task id -> the overlap that gives back the slots excluded annotators used: the stream serves those again.

    Args:
        skip_items: item ids to leave alone (gold items: every annotator gets them anyway).
    """
    left_out, skip = set(excluded), {str(i) for i in skip_items}
    wanted: dict[int, int] = {}
    for task in export_json:
        if str((task.get("data") or {}).get(id_field)) in skip:
            continue
        names = {
            _annotator(ann.get("completed_by"), user_names)
            for ann in task.get("annotations") or []
            if not ann.get("was_cancelled")
        }
        if names & left_out:
            wanted[int(task["id"])] = overlap + len(names & left_out)
    return wanted


def load_gold(path: Path, *, text_col: str, classes: Sequence[str]) -> pd.DataFrame:
    """Read a gold file (CSV, JSONL or Parquet) into item_id, `text_col`, label.

    Item ids come from an `item_id` column, else from the text (16 hex digits, the shape of
    the user's own content ids, so a gold task does not stand out in the Data Manager).

    Raises:
        GoldFileError: the file is missing, unreadable, lacks a column, has an empty text,
            a label outside the classes, or a repeated item.
    """
    path = Path(path)
    readers: dict[str, Callable[[Path], pd.DataFrame]] = {
        ".csv": pd.read_csv,
        ".jsonl": lambda p: pd.read_json(p, lines=True),
        ".parquet": pd.read_parquet,
    }
    if not path.is_file():
        raise GoldFileError(f"annotation.gold file {path} does not exist; point annotation.gold at your gold items")
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise GoldFileError(
            f"annotation.gold file {path} is not CSV, JSONL or Parquet (by its suffix); save it as one of those"
        )
    try:
        frame = reader(path)
    except (ValueError, OSError) as exc:
        raise GoldFileError(f"annotation.gold file {path} cannot be read: {exc}") from None
    missing = [c for c in (text_col, "label") if c not in frame.columns]
    if missing:
        raise GoldFileError(
            f"annotation.gold file {path} has no column {', '.join(map(repr, missing))} (columns: "
            f"{', '.join(map(str, frame.columns))}); it needs the text column {text_col!r} and the known `label`"
        )
    text = frame[text_col].astype("string").str.strip()
    label = frame["label"].astype("string").str.strip()
    rows = lambda mask: ", ".join(str(i + 1) for i in np.flatnonzero(mask)[:5])  # noqa: E731 - 1-based data rows
    empty = (text.isna() | (text == "")).to_numpy()
    if empty.any():
        raise GoldFileError(f"annotation.gold file {path}: empty {text_col!r} in row(s) {rows(empty)}; fill or drop it")
    outside = (~label.isin(list(classes))).fillna(True).to_numpy()
    if outside.any():
        raise GoldFileError(
            f"annotation.gold file {path}: labels in row(s) {rows(outside)} are not among labels.classes "
            f"{list(classes)}; fix the labels or drop those rows"
        )
    ids = frame["item_id"].astype(str) if "item_id" in frame.columns else text.map(gold_item_id).astype(str)
    repeated = ids.duplicated().to_numpy()
    if repeated.any():
        raise GoldFileError(f"annotation.gold file {path}: row(s) {rows(repeated)} repeat an earlier item; drop them")
    return pd.DataFrame({"item_id": ids.to_numpy(), text_col: text.astype(str).to_numpy(), "label": label.to_numpy()})


def gold_item_id(text: str) -> str:
    """A gold item's id from its text: 16 hex digits, salted so it never equals a user item's content id."""
    return hashlib.sha256(f"sluice-gold\0{text}".encode()).hexdigest()[:16]


def plan_gold(gold: pd.DataFrame, *, user_items: int, imported: Collection[str], rate: float) -> pd.DataFrame:
    """The gold items to import now so that gold makes up `rate` of the project's tasks (at most all of them).

    Args:
        user_items: the user's items in the project once this import is done.
        imported: item ids of the gold items already in the project.
    """
    target = min(len(gold), math.ceil(rate * user_items / (1.0 - rate))) if rate > 0 else 0
    done = gold["item_id"].astype(str).isin(set(imported))
    return gold[~done].head(max(0, target - int(done.sum()))).reset_index(drop=True)


def plan_stream(
    items: pd.DataFrame,
    present: Collection[str],
    gold: pd.DataFrame | None,
    *,
    rate: float,
    text_col: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What to import now, in stream order: items not in the project yet, gold spread among them; and that gold.

    Args:
        present: item ids already in the project (the user's and gold alike).
    """
    fresh = items.loc[~items["item_id"].astype(str).isin(set(present)), ["item_id", text_col]]
    if gold is None:
        return fresh.reset_index(drop=True), pd.DataFrame(columns=["item_id", text_col, "label"])
    gold_ids = set(gold["item_id"].astype(str))
    clash = sorted(gold_ids & set(items["item_id"].astype(str)))
    if clash:
        raise GoldFileError(
            f"gold items {clash[:5]} have the ids of the user's own rows; gold items must not be your data: "
            "drop them from the gold file or give them other item_id values"
        )
    user_items = len(set(present) - gold_ids) + len(fresh)
    gold_now = plan_gold(gold, user_items=user_items, imported=gold_ids & set(present), rate=rate)
    return interleave_gold(fresh, gold_now), gold_now


def interleave_gold(items: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """Items and gold items in one stream order, gold spread evenly (Label Studio serves tasks in import order)."""
    n, g = len(items), len(gold)
    # Gold j sits between user items: at fractional position (j + 1) (n + 1) / (g + 1) - 0.5.
    keys = np.concatenate([np.arange(n, dtype=float), (np.arange(1, g + 1) * (n + 1) / (g + 1)) - 0.5])
    combined = pd.concat([items, gold[[c for c in items.columns if c in gold.columns]]], ignore_index=True)
    return combined.iloc[np.argsort(keys, kind="stable")].reset_index(drop=True)


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


PROGRESS_COLUMNS = ["annotator", "status", "project", "done", "skipped", "last_annotation", "last_activity"]


def summarise_progress(log: pd.DataFrame, accounts: pd.DataFrame) -> pd.DataFrame:
    """Each person's progress per project: annotations done, skipped, their last annotation and activity.

    Args:
        log: one row per annotation: project, user_id, annotator (email), cancelled, created_at.
        accounts: user_id, email, removed, last_activity; removed members' emails are masked by
            Label Studio, so their address is taken from their annotations where they have any.

    Returns:
        PROGRESS_COLUMNS, one row per person and project (a person with no annotations yet gets
        one row with project "-"), active people first.
    """
    known = (
        log.dropna(subset=["user_id", "annotator"]).drop_duplicates("user_id").set_index("user_id")["annotator"]
        if not log.empty
        else pd.Series(dtype="str")
    )
    people = accounts.assign(
        annotator=[
            str(known.get(uid, f"(removed user {uid})")) if removed else str(email)
            for uid, email, removed in accounts[["user_id", "email", "removed"]].itertuples(index=False)
        ],
        status=["removed" if removed else "active" for removed in accounts["removed"]],
    )
    if log.empty:
        per = pd.DataFrame(columns=["user_id", "project", "done", "skipped", "last_annotation"])
    else:
        per = (
            log.assign(done=~log["cancelled"], skipped=log["cancelled"])
            .groupby(["user_id", "project"], as_index=False)
            .agg(done=("done", "sum"), skipped=("skipped", "sum"), last_annotation=("created_at", "max"))
        )
    table = people.merge(per, on="user_id", how="left")
    table["project"] = table["project"].fillna("-")
    table[["done", "skipped"]] = table[["done", "skipped"]].fillna(0).astype("int64")
    table = table.sort_values(["status", "annotator", "project"], kind="stable")
    return table[PROGRESS_COLUMNS].reset_index(drop=True)
