"""Clean: text normalisation, missing values, exact duplicates and outliers, all from config.

Steps run in that order. A removed row goes to quarantine with the step and the reason;
before returning, every item id that came in is checked to leave as kept or quarantined.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tasks.columns import ITEM_ID, source_columns
from tasks.quarantine import check_ids_conserved, concat_quarantine, quarantine_rows, summarise_quarantine

_WHITESPACE = re.compile(r"\s+")
STEPS = ("missing", "dedupe", "outliers")
"""The quarantine steps of the clean stage."""


class MissingPolicy(BaseModel):
    """What to do with a missing value in one column."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["drop", "impute"] = "drop"
    strategy: Literal["constant", "median", "mean", "mode"] = "constant"
    value: str | float | int | None = None
    """The constant to impute with (strategy: constant)."""


class OutlierRule(BaseModel):
    """Quarantine numeric values far from the bulk of a column."""

    model_config = ConfigDict(extra="forbid")

    column: str
    method: Literal["iqr", "zscore"] = "iqr"
    k: float = 3.0
    """IQR: outside [Q1 - k*IQR, Q3 + k*IQR]. z-score: |z| > k."""


class CleanConfig(BaseModel):
    """The clean stage's steps. Column names refer to the snapshot's columns."""

    model_config = ConfigDict(extra="forbid")

    normalize_text: list[str] = Field(default_factory=list)
    """Text columns to normalise: unicode NFC, whitespace collapsed, ends stripped."""
    missing: dict[str, MissingPolicy] = Field(default_factory=dict)
    """Per column; an empty string (after normalisation) counts as missing."""
    dedupe_on: list[str] | None = None
    """Columns whose equal values make rows duplicates; None = every data column; [] = no dedupe."""
    outliers: list[OutlierRule] = Field(default_factory=list)


@dataclass
class CleanResult:
    data: pd.DataFrame
    quarantine: pd.DataFrame
    rows_in: int
    imputed: dict[str, int]

    @property
    def rows_kept(self) -> int:
        return len(self.data)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    def summary_markdown(self) -> str:
        lines = [
            "### Clean",
            "",
            f"- rows in: **{self.rows_in}**, kept: **{self.rows_kept}**, quarantined: **{self.rows_quarantined}**",
        ]
        if self.imputed:
            lines.append("- imputed: " + ", ".join(f"{c}: {n}" for c, n in self.imputed.items()))
        counts = summarise_quarantine(self.quarantine)
        if not counts.empty:
            lines += ["", "| step | reason | rows |", "|---|---|---|"]
            lines += [f"| {r.step} | {r.reason} | {r.rows} |" for r in counts.itertuples()]
        return "\n".join(lines)


def normalize_text(values: pd.Series) -> pd.Series:
    """Unicode NFC, runs of whitespace as one space, ends stripped; missing stays missing."""

    def _one(value: object) -> object:
        if not isinstance(value, str):
            return value
        return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", value)).strip()

    return values.map(_one)


def _data_columns(df: pd.DataFrame) -> list[str]:
    return source_columns(df.columns)


def _require(df: pd.DataFrame, column: str, setting: str) -> None:
    if column not in df.columns:
        raise ValueError(
            f'column "{column}" named in clean.{setting} is missing from the snapshot; available columns: '
            f"{', '.join(map(str, _data_columns(df)))}. Fix clean.{setting} in the pipeline config."
        )


def _missing_mask(values: pd.Series) -> pd.Series:
    mask = values.isna()
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        mask |= values.astype("str").str.len().eq(0) & values.notna()
    return mask


def _impute_value(values: pd.Series, policy: MissingPolicy, column: str) -> object:
    present = values[~_missing_mask(values)]
    if policy.strategy == "constant":
        if policy.value is None:
            raise ValueError(f"clean.missing.{column} imputes a constant but gives no value; add `value: ...` to it.")
        return policy.value
    if policy.strategy == "mode":
        return present.mode().iloc[0] if not present.empty else policy.value
    numeric = pd.to_numeric(present, errors="coerce")
    if numeric.isna().all():
        raise ValueError(
            f"clean.missing.{column} uses strategy {policy.strategy} but the column is not numeric; "
            "use strategy: mode or constant."
        )
    return float(numeric.median() if policy.strategy == "median" else numeric.mean())


@dataclass(frozen=True)
class OutlierBounds:
    """An outlier rule's thresholds, learned from one set of values and applied to any (a partition)."""

    rule: OutlierRule
    low: float
    high: float
    mean: float = 0.0
    std: float = 0.0

    def mask(self, values: pd.Series) -> pd.Series:
        """Which values lie outside the bounds (non-numeric and missing values never do)."""
        numeric = pd.to_numeric(values, errors="coerce")
        if self.rule.method == "iqr":
            return (numeric < self.low) | (numeric > self.high)
        if not np.isfinite(self.std) or self.std == 0:
            return pd.Series(False, index=values.index)
        return ((numeric - self.mean) / self.std).abs() > self.rule.k

    def reason(self) -> str:
        if self.rule.method == "iqr":
            return f"outside [{self.low:.4g}, {self.high:.4g}] (IQR rule, k={self.rule.k})"
        return f"|z| > {self.rule.k} (mean {self.mean:.4g}, std {self.std:.4g})"


def learn_outlier_bounds(values: pd.Series, rule: OutlierRule) -> OutlierBounds:
    """The rule's thresholds over `values` (quartiles, or mean and standard deviation).

    Raises:
        ValueError: the column has no numeric values.
    """
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == 0:
        raise ValueError(f'clean.outliers names column "{rule.column}", which has no numeric values; remove the rule.')
    if rule.method == "iqr":
        q1, q3 = numeric.quantile(0.25), numeric.quantile(0.75)
        return OutlierBounds(rule, low=float(q1 - rule.k * (q3 - q1)), high=float(q3 + rule.k * (q3 - q1)))
    return OutlierBounds(rule, low=np.nan, high=np.nan, mean=float(numeric.mean()), std=float(numeric.std(ddof=0)))


def _exact_duplicates(data: pd.DataFrame, columns: list[str]) -> tuple[pd.Series, list[str]]:
    """Mask of the later copies of rows equal on `columns`, and a reason naming each one's first copy.

    A row with a missing value in a key column is no one's duplicate: pandas would call two missing
    values equal and merge unrelated rows (and a NaN key is not found again in a dict).
    """
    complete = ~pd.concat([_missing_mask(data[c]) for c in columns], axis=1).any(axis=1).to_numpy()
    keyed = data[complete]
    duplicated = np.zeros(len(data), dtype=bool)
    duplicated[complete] = keyed.duplicated(subset=columns, keep="first").to_numpy()
    first_id = keyed.groupby(columns, sort=False)[ITEM_ID].transform("first").to_numpy()
    firsts = first_id[duplicated[complete]]
    reasons = [f"exact duplicate of item {first} on {', '.join(columns)}" for first in firsts]
    return pd.Series(duplicated, index=data.index), reasons


def clean_frame(df: pd.DataFrame, config: CleanConfig) -> CleanResult:
    """Apply the configured cleaning steps; removed rows go to quarantine with their reason.

    Raises:
        ValueError: a configured column is absent or a policy does not fit its column.
    """
    rows_in = len(df)
    data = df.copy()
    parts: list[pd.DataFrame] = []
    imputed: dict[str, int] = {}

    for column in config.normalize_text:
        _require(data, column, "normalize_text")
        data[column] = normalize_text(data[column])

    for column, policy in config.missing.items():
        _require(data, column, "missing")
        mask = _missing_mask(data[column])
        if not mask.any():
            continue
        if policy.action == "drop":
            parts.append(quarantine_rows(data[mask], step="missing", reason=f'missing value in "{column}"'))
            data = data[~mask]
        else:
            fill = _impute_value(data[column], policy, column)
            data[column] = data[column].where(~mask, fill)
            imputed[column] = int(mask.sum())

    dedupe_on = _data_columns(data) if config.dedupe_on is None else config.dedupe_on
    for column in dedupe_on:
        _require(data, column, "dedupe_on")
    if dedupe_on:
        duplicated, reasons = _exact_duplicates(data, dedupe_on)
        if duplicated.any():
            parts.append(quarantine_rows(data[duplicated], step="dedupe", reason=reasons))
            data = data[~duplicated]

    for rule in config.outliers:
        _require(data, rule.column, "outliers")
        bounds = learn_outlier_bounds(data[rule.column], rule)
        mask = bounds.mask(data[rule.column])
        if mask.any():
            parts.append(quarantine_rows(data[mask], step="outliers", reason=f'"{rule.column}" {bounds.reason()}'))
            data = data[~mask]

    quarantine = concat_quarantine(parts)
    check_ids_conserved(df[ITEM_ID], stage="clean", kept=data[ITEM_ID], quarantined=quarantine[ITEM_ID])
    return CleanResult(data=data.reset_index(drop=True), quarantine=quarantine, rows_in=rows_in, imputed=imputed)


def quarantine_unusable(result: CleanResult, reasons: Sequence[str | None], *, step: str) -> CleanResult:
    """The clean result with the rows whose item cannot be used (`reasons[i]` set) moved to quarantine.

    `reasons` is one entry per kept row (a modality's `unusable_items`), e.g. an unreadable WAV file.
    """
    data = result.data
    if len(reasons) != len(data):
        raise ValueError(f"{len(reasons)} reasons for {len(data)} rows: one per kept row")
    bad = pd.Series([r is not None for r in reasons], index=data.index)
    if not bad.any():
        return result
    moved = quarantine_rows(data[bad], step=step, reason=[r for r in reasons if r is not None])
    quarantine = concat_quarantine([result.quarantine, moved])
    kept = data[~bad]
    check_ids_conserved(data[ITEM_ID], stage=step, kept=kept[ITEM_ID], quarantined=moved[ITEM_ID])
    return CleanResult(
        data=kept.reset_index(drop=True), quarantine=quarantine, rows_in=result.rows_in, imputed=result.imputed
    )
