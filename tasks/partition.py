"""The split stage as the pipeline runs it: the copies quarantined, a manifest, the gap rows, a leakage gate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.columns import FOLD, ITEM_ID, SPLIT
from tasks.leakage import LeakageError, LeakageReport, leakage_report
from tasks.quarantine import check_ids_conserved, quarantine_rows
from tasks.split import GAP, SplitConfig, split_by_config, write_split_manifest

SPLITS = ("train", "val", "test")
STEP = "split"
"""The quarantine step of the split stage (copies of rows in other groups)."""


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

    def sizes(self) -> dict[str, int]:
        """Rows per split (train, val, test); gap rows are counted by `gap_rows`."""
        counts = self.data[SPLIT].value_counts()
        return {name: int(counts.get(name, 0)) for name in SPLITS}

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
            lines.append(f"- quarantined: {len(self.quarantine)} copies of rows in other groups")
        return "\n".join(lines)


def split_frame(df: pd.DataFrame, settings: SplitConfig, *, manifest_root: Path) -> SplitOutcome:
    """Assign every row to train/val/test (and folds over the train rows), and write the content-hashed manifest.

    Duplicates and near duplicates are merged into groups first (tasks.split), so they never straddle
    splits; a copy of a row in another group is quarantined instead (`cross_group_duplicates`).
    """
    df = df if df.index.is_unique else df.reset_index(drop=True)
    result = split_by_config(df, settings)
    splits, folds = result.splits, result.folds
    kept = df.loc[splits.index]
    data = kept.assign(**{SPLIT: splits.values})
    if folds is not None:
        data = data.assign(**{FOLD: folds.values})
    copies = describe_copies(df, result.copies, group_col=settings.group_col)
    quarantine = quarantine_rows(
        df.loc[result.copies.index], step=STEP, reason=_copy_reasons(copies, settings.group_col)
    )
    check_ids_conserved(
        df[ITEM_ID],
        stage=STEP,
        **{name: data.loc[data[SPLIT] == name, ITEM_ID] for name in (*SPLITS, GAP)},
        quarantined=quarantine[ITEM_ID],
    )
    manifest_root.mkdir(parents=True, exist_ok=True)
    staging = manifest_root / "manifest.tmp.parquet"
    digest = write_split_manifest(kept[ITEM_ID], splits, folds, staging)
    final = manifest_root / f"{digest[:16]}.parquet"
    staging.replace(final)
    return SplitOutcome(
        data=data,
        quarantine=quarantine,
        copies=copies,
        manifest_path=final,
        manifest_hash=digest,
        settings=settings,
    )


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
    return leakage_report(
        outcome.data,
        outcome.data[SPLIT],
        text_col=settings.text_col,
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
