"""The split stage as the pipeline runs it: copies quarantined, a manifest, the gap rows, a leakage gate.

Splits are sticky per dataset: the assignment (every item ever assigned -> its split) is a
content-addressed Parquet file under `<splits>/assignments/`, and `<splits>/current/<dataset>.json`
points at the newest one. The next run reads it, keeps every assigned item's split, and places
only the new items (tasks.split). `split.reshuffle: true` draws train/val/test afresh; a holdout,
once drawn, stays frozen either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.columns import FOLD, ITEM_ID, SPLIT, SPLITS
from tasks.leakage import LeakageError, LeakageReport, leakage_report
from tasks.quarantine import check_ids_conserved, concat_quarantine, quarantine_rows
from tasks.split import GAP, HOLDOUT, SplitConfig, split_by_config, write_split_manifest

STEP = "split"
"""The quarantine step of the split stage (copies of rows in other groups, rows joining two splits)."""


@dataclass(frozen=True)
class Assignment:
    """Every item a dataset's runs assigned, and its split: what the next run carries forward."""

    splits: pd.Series
    """item_id (str) -> "train", "val", "test", "holdout" or "gap"."""
    digest: str
    """sha256 of the assignment file (byte-stable: equal assignments hash equal)."""
    path: Path
    strategy: str
    cuts: tuple[float, float] | None = None
    """A temporal split's cut times, frozen with the assignment."""
    holdout: str | None = None
    """How the holdout was made ("fraction 0.1", "file ids.csv"); None without one."""
    parent: str | None = None
    """The digest of the assignment this one carried forward; None for a first or reshuffled split."""
    made_from: str | None = None
    """The split inputs (data and settings) this assignment was computed from: a cache key part."""

    @property
    def holdout_items(self) -> int:
        return int((self.splits == HOLDOUT).sum())

    def pointer(self) -> dict[str, object]:
        return {
            "assignment": self.digest,
            "path": self.path.name,
            "strategy": self.strategy,
            "cuts": list(self.cuts) if self.cuts else None,
            "holdout": self.holdout,
            "parent": self.parent,
            "made_from": self.made_from,
            "items": {name: int(n) for name, n in self.splits.value_counts().sort_index().items()},
        }


@dataclass
class SplitOutcome:
    data: pd.DataFrame
    """The kept rows with a `split` column (train, val, test, and gap for temporal; `fold` with folds)."""
    quarantine: pd.DataFrame
    """Copies of rows in other groups, quarantined with step "split" and the original they copy."""
    copies: pd.DataFrame
    """The same copies as a listing for the leakage report: item_id, group, original, original_group, kind."""
    manifest_path: Path
    manifest_hash: str
    settings: SplitConfig
    assignment: pd.Series = field(default_factory=lambda: pd.Series(dtype=str))
    """The assignment to carry forward: the earlier one's items updated with this run's (item_id -> split)."""
    parent: Assignment | None = None
    """The assignment this split started from (None: a first split)."""
    dataset: str | None = None
    """Whose assignment this is; None for a split that carries nothing forward."""
    cuts: tuple[float, float] | None = None
    holdout_source: str | None = None
    carried: int = 0
    """Rows that kept the split an earlier run gave them."""

    @property
    def reshuffled(self) -> bool:
        """True when an earlier assignment existed and train/val/test were drawn afresh anyway."""
        return self.parent is not None and self.settings.reshuffle

    def sizes(self) -> dict[str, int]:
        """Rows per split (train, val, test, and holdout when there is one); gap rows are counted by `gap_rows`."""
        counts = self.data[SPLIT].value_counts()
        sizes = {name: int(counts.get(name, 0)) for name in SPLITS}
        return sizes | ({HOLDOUT: int(counts[HOLDOUT])} if HOLDOUT in counts else {})

    def holdout_rows(self) -> pd.DataFrame:
        """The frozen holdout's rows in this run: never trained or validated on."""
        return self.data[self.data[SPLIT] == HOLDOUT].reset_index(drop=True)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: self.data[self.data[SPLIT] == name].reset_index(drop=True) for name in SPLITS}

    def gap_rows(self) -> pd.DataFrame:
        """Rows a temporal split left between its splits: in no split, not trained on, not quarantined."""
        return self.data[self.data[SPLIT] == GAP].reset_index(drop=True)

    def summary_markdown(self) -> str:
        sizes = ", ".join(f"{k}: {v}" for k, v in self.sizes().items())
        lines = [
            f"### Split ({self.settings.strategy}, seed {self.settings.seed})",
            "",
            f"- sizes: {sizes}",
            f"- manifest: `{self.manifest_path}` (sha256 `{self.manifest_hash[:16]}…`)",
        ]
        gap = len(self.gap_rows())
        if gap:
            lines.append(f"- gap: {gap} rows between the temporal splits (kept aside, not trained on)")
        if len(self.quarantine):
            lines.append(
                f"- quarantined: {len(self.quarantine)} copies of rows in other groups or rows joining two splits"
            )
        lines.append(f"- assignment: {self.describe_assignment()}")
        return "\n".join(lines)

    def describe_assignment(self) -> str:
        """Where this split came from, in words: carried forward, first, or reshuffled (said loudly)."""
        new = len(self.data) - self.carried
        holdout = self.sizes().get(HOLDOUT)
        frozen = f"; holdout {holdout} items ({self.holdout_source}), never trained or validated on" if holdout else ""
        if self.parent is None:
            return f"first split of these items ({len(self.data)} rows){frozen}"
        if self.reshuffled:
            return (
                f"RESHUFFLED (split.reshuffle: true): train/val/test drawn afresh instead of carrying assignment "
                f"{self.parent.digest[:12]} forward; items earlier versions trained on may sit in this test split, "
                f"so compare with them on the holdout only{frozen}"
            )
        return (
            f"carried forward from assignment {self.parent.digest[:12]}: {self.carried} rows kept their split, "
            f"{new} new rows placed toward the ratios{frozen}"
        )


def split_frame(
    df: pd.DataFrame,
    settings: SplitConfig,
    *,
    manifest_root: Path,
    dataset: str | None = None,
    holdout_ids: Collection[str] | None = None,
) -> SplitOutcome:
    """Assign every row to train/val/test (and folds over the train rows), and write the content-hashed manifest.

    Duplicates and near duplicates are merged into groups first (tasks.split), so they never straddle
    splits; a copy of a row in another group is quarantined instead (`cross_group_duplicates`). With
    `dataset`, the dataset's current assignment under `manifest_root` is carried forward: assigned
    items keep their split (see the module docstring); `commit_assignment` records the new one.

    Args:
        holdout_ids: the items of a holdout file (`split.holdout` naming a file); they and their groups
            are the holdout.

    Raises:
        ValueError: the earlier assignment cannot be carried forward (another strategy, a holdout set
            too late, holdout items already trained on); the message names the fix.
    """
    ids = df[ITEM_ID].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"item ids repeat in the rows to split, e.g. {ids[ids.duplicated()].unique()[:3].tolist()}")
    # Rows are labelled by item id, so every message and copy listing names items.
    df = df.set_axis(pd.Index(ids, name=None), axis=0)
    prior = load_assignment(manifest_root, dataset) if dataset is not None else None
    fixed, cuts, draw = _carried_forward(df, settings, prior, holdout_ids)
    result = split_by_config(df, settings, fixed=fixed, cuts=cuts, draw_holdout=draw)
    splits, folds = result.splits, result.folds
    kept = df.loc[splits.index]
    data = kept.assign(**{SPLIT: splits.values})
    if folds is not None:
        data = data.assign(**{FOLD: folds.values})
    copies = describe_copies(df, result.copies, group_col=settings.group_col)
    quarantine = concat_quarantine(
        [
            quarantine_rows(df.loc[result.copies.index], step=STEP, reason=_copy_reasons(copies, settings.group_col)),
            quarantine_rows(df.loc[result.bridges.index], step=STEP, reason=_bridge_reasons(result.bridges)),
        ]
    )
    check_ids_conserved(
        df[ITEM_ID],
        stage=STEP,
        **{name: data.loc[data[SPLIT] == name, ITEM_ID] for name in (*SPLITS, HOLDOUT, GAP)},
        quarantined=quarantine[ITEM_ID],
    )
    if fixed is not None:
        _check_carried(fixed, splits)
    earlier = prior.splits if prior is not None else pd.Series(dtype=str)
    carried = 0 if settings.reshuffle else int(splits.index.isin(earlier.index).sum())
    manifest_root.mkdir(parents=True, exist_ok=True)
    staging = manifest_root / "manifest.tmp.parquet"
    digest = write_split_manifest(kept[ITEM_ID], splits, folds, staging)
    final = manifest_root / f"{digest[:16]}.parquet"
    staging.replace(final)
    if settings.reshuffle:
        earlier = earlier[earlier == HOLDOUT]
    assignment = pd.concat([earlier.drop(splits.index, errors="ignore"), splits.astype(str)]).sort_index()
    return SplitOutcome(
        data=data.reset_index(drop=True),
        quarantine=quarantine,
        copies=copies,
        manifest_path=final,
        manifest_hash=digest,
        settings=settings,
        assignment=assignment.rename("split"),
        parent=prior,
        dataset=dataset,
        cuts=result.cuts,
        holdout_source=_holdout_source(settings, prior, assignment),
        carried=carried,
    )


def _carried_forward(
    df: pd.DataFrame, settings: SplitConfig, prior: Assignment | None, holdout_ids: Collection[str] | None
) -> tuple[pd.Series | None, tuple[float, float] | None, bool]:
    """The split each row must keep (missing for new rows), the temporal cuts, and whether to draw a holdout."""
    fraction = isinstance(settings.holdout, float)
    if prior is not None and not settings.reshuffle:
        if prior.strategy != settings.strategy:
            raise ValueError(
                f"split.strategy is {settings.strategy!r}, but the current assignment {prior.digest[:12]} of these "
                f"items was made with {prior.strategy!r}; set split.reshuffle: true to split afresh (the model "
                "card then says earlier versions may have trained on test items), or restore the strategy"
            )
        if fraction and prior.holdout_items == 0:
            raise ValueError(
                f"split.holdout is set, but the current assignment {prior.digest[:12]} was made without one and "
                "its items were trained on: a holdout is frozen at the first split. Set split.reshuffle: true "
                "once to draw it with a fresh split, or leave split.holdout out"
            )
    earlier = prior.splits if prior is not None else pd.Series(dtype=str)
    if settings.reshuffle:
        earlier = earlier[earlier == HOLDOUT]  # a holdout stays frozen through a reshuffle
    if holdout_ids is not None:
        listed = pd.Index(sorted({str(i) for i in holdout_ids}))
        trained = earlier.reindex(listed).dropna()
        trained = trained[trained != HOLDOUT]
        if len(trained):
            raise ValueError(
                f"{len(trained)} items of the holdout file {settings.holdout} were already assigned by an earlier "
                f"run (e.g. {', '.join(f'{i} ({s})' for i, s in trained.head(3).items())}): a holdout must never "
                "have been trained or validated on. Remove them from the file, or set split.reshuffle: true"
            )
        earlier = pd.concat([earlier, pd.Series(HOLDOUT, index=listed.difference(earlier.index))])
    fixed = earlier.reindex(df.index) if len(earlier) else None
    cuts = prior.cuts if prior is not None and not settings.reshuffle else None
    draw = fraction and not (earlier == HOLDOUT).any()
    return fixed, cuts, draw


def _check_carried(fixed: pd.Series, splits: pd.Series) -> None:
    """Every assigned row kept its split; anything else is a bug in the placement, stopped here."""
    before = fixed.reindex(splits.index).dropna()
    moved = before[before != splits.loc[before.index]]
    if len(moved):
        raise AssertionError(f"{len(moved)} assigned items changed split, e.g. {moved.index[:3].tolist()}")


def _holdout_source(settings: SplitConfig, prior: Assignment | None, assignment: pd.Series) -> str | None:
    if not (assignment == HOLDOUT).any():
        return None
    if prior is not None and prior.holdout:
        return prior.holdout  # frozen: how it was first made
    if isinstance(settings.holdout, float):
        return f"fraction {settings.holdout:g}, frozen at the first split"
    return f"file {Path(str(settings.holdout)).name}" if settings.holdout else "kept from an earlier split"


def read_holdout_ids(path: Path) -> set[str]:
    """The item ids of a holdout file: a CSV with an `item_id` column, or one id per line.

    Raises:
        FileNotFoundError: the file is missing (the message names split.holdout).
    """
    if not path.is_file():
        raise FileNotFoundError(f"holdout file {path} (split.holdout) does not exist; name a file of item ids")
    text = path.read_text().splitlines()
    if text and text[0].strip().split(",")[0] == "item_id":
        return {str(v) for v in pd.read_csv(path, dtype=str)["item_id"].dropna()}
    return {line.strip() for line in text if line.strip()}


def load_assignment(root: Path, dataset: str) -> Assignment | None:
    """The dataset's current assignment (the pointer under `<root>/current/`), or None before its first split.

    Raises:
        ValueError: the pointer names an assignment file that is gone.
    """
    pointer = assignment_pointer(root, dataset)
    if not pointer.is_file():
        return None
    meta = json.loads(pointer.read_text())
    path = root / "assignments" / str(meta["path"])
    if not path.is_file():
        raise ValueError(
            f"{pointer} points at split assignment {path}, which is missing; restore it, or delete {pointer} "
            "to split afresh (earlier versions may then have trained on test items)"
        )
    frame = pd.read_parquet(path)
    cuts = meta.get("cuts")
    return Assignment(
        splits=pd.Series(frame["split"].to_numpy(), index=frame["item_id"].astype(str).to_numpy(), name="split"),
        digest=str(meta["assignment"]),
        path=path,
        strategy=str(meta["strategy"]),
        cuts=(float(cuts[0]), float(cuts[1])) if cuts else None,
        holdout=meta.get("holdout"),
        parent=meta.get("parent"),
        made_from=meta.get("made_from"),
    )


def current_assignment_digest(root: Path, dataset: str) -> tuple[str | None, str | None, str | None]:
    """The pointer's (assignment digest, parent digest, made_from) without reading the assignment; Nones before any."""
    pointer = assignment_pointer(root, dataset)
    if not pointer.is_file():
        return None, None, None
    meta = json.loads(pointer.read_text())
    return meta.get("assignment"), meta.get("parent"), meta.get("made_from")


def commit_assignment(outcome: SplitOutcome, *, made_from: str | None = None) -> Assignment:
    """Write the outcome's assignment (content-addressed, byte-stable) and point the dataset's pointer at it.

    An unchanged assignment leaves the pointer as it is, so an identical rerun keeps its parent.
    """
    if outcome.dataset is None:
        raise ValueError("this split carries nothing forward (split_frame was called without a dataset)")
    root = outcome.manifest_path.parent
    folder = root / "assignments"
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / "assignment.tmp.parquet"
    ids = pd.Series(outcome.assignment.index.to_numpy(dtype=object), index=outcome.assignment.index)
    digest = write_split_manifest(ids, outcome.assignment, None, staging)
    path = folder / f"{digest[:16]}.parquet"
    staging.replace(path)
    parent = outcome.parent
    if parent is not None and parent.digest == digest:
        return parent
    assignment = Assignment(
        splits=outcome.assignment,
        digest=digest,
        path=path,
        strategy=outcome.settings.strategy,
        cuts=outcome.cuts if outcome.settings.strategy == "temporal" else None,
        holdout=outcome.holdout_source,
        parent=None if parent is None or outcome.reshuffled else parent.digest,
        made_from=made_from,
    )
    pointer = assignment_pointer(root, outcome.dataset)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.tmp")
    tmp.write_text(json.dumps({"dataset": outcome.dataset, **assignment.pointer()}, indent=2, sort_keys=True))
    os.replace(tmp, pointer)
    return assignment


def assignment_pointer(root: Path, dataset: str) -> Path:
    """Where a dataset's pointer to its current assignment lives, under the splits folder."""
    return root / "current" / f"{dataset}.json"


def describe_copies(df: pd.DataFrame, copies: pd.DataFrame, *, group_col: str | None) -> pd.DataFrame:
    """The cross-group copies by item id: item_id, group, original, original_group, kind."""
    ids = df[ITEM_ID].astype(str)
    groups = df[group_col] if group_col is not None else pd.Series(None, index=df.index, dtype=object)
    return pd.DataFrame(
        {
            ITEM_ID: ids.loc[copies.index].to_numpy(),
            "group": groups.loc[copies.index].to_numpy(dtype=object),
            "original": ids.loc[copies["original"]].to_numpy(),
            "original_group": groups.loc[copies["original"]].to_numpy(dtype=object),
            "kind": copies["kind"].to_numpy(),
        }
    )


def _bridge_reasons(bridges: pd.DataFrame) -> list[str]:
    return [
        f"joins items an earlier run put in different splits ({row.splits}: items {row.examples}) as a duplicate "
        "or a member of their groups; left out so that neither split changes (split.reshuffle: true re-splits)"
        for row in bridges.itertuples()
    ]


def _copy_reasons(copies: pd.DataFrame, group_col: str | None) -> list[str]:
    return [
        f"{'' if row.kind == 'duplicate' else f'{row.kind} '}duplicate of item {row.original} "
        f"({group_col}={row.original_group!r}), which is kept; "
        f"this copy under {group_col}={row.group!r} would join the two groups "
        "(split.cross_group_duplicates: merge keeps it and joins them)"
        for row in copies.itertuples()
    ]


def write_gap_rows(rows: pd.DataFrame, path: Path) -> Path | None:
    """Write a temporal split's gap rows as Parquet; with none, remove an older file and return None."""
    if rows.empty:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(path, index=False)
    return path


def check_leakage(outcome: SplitOutcome) -> LeakageReport:
    """The leakage report of a split, with the split's own duplicate, time and label-shift settings."""
    settings = outcome.settings
    splits = outcome.data[SPLIT]
    if settings.strategy != "temporal":
        # The holdout is checked as part of the held-out side: nothing in it may leak from train or val.
        splits = splits.replace({HOLDOUT: "test"})
    return leakage_report(
        outcome.data,
        splits,
        text_col=settings.text_col,
        columns={
            "image_col": settings.image_col,
            "audio_col": settings.audio_col,
            "feature_cols": list(settings.feature_cols or []) or None,
        },
        group_col=settings.group_col,
        time_col=settings.time_col,
        label_col=settings.label_col,
        # Text near duplicates are checked as the split found them: by MinHash at its threshold.
        near_threshold=settings.near_duplicate_threshold if settings.near_duplicates == "minhash" else None,
        time_ordered=settings.strategy == "temporal",
        max_label_shift=settings.max_label_shift,
        copies=outcome.copies,
    )


def raise_on_leakage(report: LeakageReport) -> None:
    """Stop the flow when a hard leakage check failed.

    Raises:
        LeakageError: with the report's findings.
    """
    if not report.passed:
        raise LeakageError(report)
