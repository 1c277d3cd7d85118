"""The split stage as the pipeline runs it: settings from the column roles, a manifest, a leakage gate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.leakage import LeakageError, LeakageReport
from tasks.split import SplitConfig, split_by_config, write_split_manifest

SPLITS = ("train", "val", "test")


@dataclass
class SplitOutcome:
    data: pd.DataFrame
    """The labelled rows with a `split` column (and `fold` when folds were asked for)."""
    manifest_path: Path
    manifest_hash: str
    settings: SplitConfig

    def sizes(self) -> dict[str, int]:
        counts = self.data["split"].value_counts()
        return {name: int(counts.get(name, 0)) for name in [*SPLITS, *sorted(set(counts.index) - set(SPLITS))]}

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: self.data[self.data["split"] == name].reset_index(drop=True) for name in SPLITS}

    def summary_markdown(self) -> str:
        sizes = ", ".join(f"{k}: {v}" for k, v in self.sizes().items())
        return (
            f"### Split ({self.settings.strategy}, seed {self.settings.seed})\n\n- sizes: {sizes}\n"
            f"- manifest: `{self.manifest_path}` (sha256 `{self.manifest_hash[:16]}…`)"
        )


def settings_with_columns(
    config: SplitConfig, *, text: str | None, group: str | None, time: str | None, label: str
) -> SplitConfig:
    """The split settings, with column roles taken from `columns:` where the split section leaves them unset."""
    return config.model_copy(
        update={
            "text_col": config.text_col or text,
            "group_col": config.group_col or group,
            "time_col": config.time_col or time,
            "label_col": config.label_col or label,
        }
    )


def split_frame(df: pd.DataFrame, settings: SplitConfig, *, manifest_root: Path) -> SplitOutcome:
    """Assign every row to train/val/test (and folds over the train rows), and write the content-hashed manifest.

    Duplicates and near duplicates are merged into groups first (tasks.split), so they never straddle splits.
    """
    result = split_by_config(df, settings)
    splits, folds = result.splits, result.folds
    data = df.assign(split=splits.values)
    if folds is not None:
        data = data.assign(fold=folds.values)
    manifest_root.mkdir(parents=True, exist_ok=True)
    staging = manifest_root / "manifest.tmp.parquet"
    digest = write_split_manifest(df["item_id"], splits, folds, staging)
    final = manifest_root / f"{digest[:16]}.parquet"
    staging.replace(final)
    return SplitOutcome(data=data, manifest_path=final, manifest_hash=digest, settings=settings)


def raise_on_leakage(report: LeakageReport) -> None:
    """Stop the flow when a hard leakage check failed.

    Raises:
        LeakageError: with the report's findings.
    """
    if not report.passed:
        raise LeakageError(report)
