"""Leakage-safe train/val/test splits, k folds, and a byte-stable split manifest.

Before anything is split, rows that are the same item are merged into one group:
the user's `group_col`, exact duplicates of the text (after `canonical_text`),
near duplicates (MinHash/LSH or embeddings), image pHash neighbours and rows with
equal rounded features, joined by union-find. A group is placed whole, so no
duplicate or group ever sits on both sides of a split.

A duplicate that sits in another user group is a copy (a review re-posted under
another movie), not a reason to merge the two groups: joined transitively, a few
hundred such copies make one group of everything. With
`cross_group_duplicates="quarantine"` (the default of `split_by_config`) the first
occurrence in row order is kept and the copies in other groups are handed back in
`SplitResult.copies`, to be quarantined; "merge" (and `assign_splits`) joins the
groups instead. Duplicates inside one group, or of rows without a group value, are
merged either way.

Strategies:
- "stratified": rows (groups) spread so every split keeps the label mix.
  Without `label_col` it is a plain random split that still respects groups.
- "group": the same placement, but `group_col` is required.
- "temporal": train < val < test on `time_col`. Rows that cannot be placed without
  leaking are labelled "gap" instead of train/val/test: the rows inside the `gap`
  window before val and before test, and later copies of a group that already
  appeared in an earlier split (the earliest copy wins, so time order holds).
  Filter them out with `splits != "gap"`; they belong to no split.

Sticky splits: `split_by_config(..., fixed=...)` takes the split an earlier run gave
each item (train, val, test, holdout, gap) and keeps it. A new row joins the split of
any assigned row it is merged with (a duplicate, or its group); new rows joining items
of two different splits are handed back in `SplitResult.bridges` (quarantined) rather
than moving either. The remaining new groups are placed so the ratios hold over the
whole frame. A temporal split keeps its cut times (`cuts`): a new row falls into the
window of its time, so later rows go to test. A "holdout" part, when asked for, is
drawn once (`draw_holdout`) and afterwards only takes the new rows of its own groups.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.columns import SPLITS
from tasks.modalities import DuplicateSettings, registered_modalities
from tasks.modalities.text import column_texts
from tasks.neardup import (
    as_edges,
    canonical_text,
    connected_groups,
    equal_value_edges,
    find_embedding_duplicates,
)

GAP = "gap"
HOLDOUT = "holdout"
# Codes of an earlier assignment: train 0, val 1, test 2, holdout 3, gap 4; -1 for a new row.
_CODES: tuple[str, ...] = (*SPLITS, HOLDOUT, GAP)
_NEW, _HOLDOUT, _GAP = -1, 3, 4
Strategy = Literal["stratified", "group", "temporal"]
NearDuplicates = Literal["minhash", "embedding", "none"]
CrossGroupDuplicates = Literal["quarantine", "merge"]
# How far the largest group may overshoot the largest ratio before the split is refused.
_GROUP_SHARE_SLACK = 0.05


class SplitConfig(BaseModel):
    """How to split one data set; every default of the split stage lives here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = "stratified"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42
    # Column roles. A pipeline config sets them once under `columns:` (sluice.config fills them in here).
    group_col: str | None = None
    time_col: str | None = None
    label_col: str | None = None
    text_col: str | None = None
    # Temporal only: a pandas Timedelta string ("7D", "12h") for datetime columns,
    # a number for numeric time columns.
    gap: str | float | None = None
    near_duplicates: NearDuplicates = "minhash"
    near_duplicate_threshold: float = Field(0.8, gt=0.0, le=1.0)  # Jaccard of char 5-grams
    embedding_col: str | None = None  # a column of vectors, for near_duplicates="embedding"
    embedding_threshold: float = Field(0.95, gt=-1.0, le=1.0)  # cosine
    image_col: str | None = None  # a column of 2-D (or HxWxC) arrays
    image_max_distance: int = Field(6, ge=0, le=64)  # pHash bits that may differ
    audio_col: str | None = None  # a column of WAV file paths
    # Fingerprint bits that may differ. Small on purpose: at 6 the same word by two espeak voices often
    # collides (tasks.audio.fingerprint_audio), which would merge the voices' groups.
    audio_max_distance: int = Field(2, ge=0, le=64)
    feature_cols: tuple[str, ...] | None = None  # tabular duplicates: equal rounded features
    feature_decimals: int = 6
    folds: int = Field(0, ge=0)  # k of stratified group k-fold over the train rows; 0 = none
    # A duplicate in another group: quarantine the copy (keep the first occurrence), or merge the groups.
    cross_group_duplicates: CrossGroupDuplicates = "quarantine"
    # Largest total variation distance between val's (test's) label mix and train's before the
    # leakage gate stops the run; None: a warning only. A single-class val/test fails it too.
    max_label_shift: float | None = Field(None, gt=0.0, le=1.0)
    # A frozen holdout no version trains or validates on: a fraction of the items drawn at the first
    # run (whole groups, stratified), or a file of item ids (CSV with an item_id column, or one per line).
    holdout: float | str | None = None
    # Draw train/val/test afresh instead of carrying the earlier assignment forward (the holdout stays).
    reshuffle: bool = False

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        _check_ratios(self.ratios)
        if isinstance(self.holdout, float) and not 0.0 < self.holdout <= 0.5:
            raise ValueError(f"holdout={self.holdout} must be a fraction in (0, 0.5], or a file of item ids")
        if isinstance(self.holdout, float) and self.strategy == "temporal":
            raise ValueError(
                "a holdout fraction would scatter items of every time into it; with strategy 'temporal' "
                "name a file of item ids as the holdout, or leave it out (the test window is the future)"
            )
        if self.folds == 1:
            raise ValueError("folds=1 is not cross-validation; use folds=0 (none) or folds>=2")
        if self.folds and self.strategy == "temporal":
            raise ValueError("folds need strategy 'stratified' or 'group'; shuffled folds break time order")
        if self.near_duplicates == "embedding" and self.embedding_col is None:
            raise ValueError('near_duplicates="embedding" needs embedding_col (a column of vectors)')
        if self.strategy == "group" and self.group_col is None:
            raise ValueError("strategy 'group' needs group_col")
        if self.strategy == "temporal" and self.time_col is None:
            raise ValueError("strategy 'temporal' needs time_col")
        return self


@dataclass(frozen=True)
class SplitResult:
    """Everything the split stage hands on: the kept rows' splits, and the copies left out of them.

    `splits`, `folds` and `groups` are on the input frame's index less the rows in `copies`.
    """

    splits: pd.Series  # "train" / "val" / "test" (and "gap" for temporal)
    folds: pd.Series | None  # fold id for train rows, -1 elsewhere; None without folds
    groups: pd.Series  # merged group id: rows that must stay together
    # One row per copy of a row in another group (index: the copy's label): `original` is the
    # label of the kept first occurrence, `kind` "exact", "normalised" or "near" (or "duplicate"
    # without a text column). Empty unless cross_group_duplicates="quarantine".
    copies: pd.DataFrame = field(default_factory=lambda: _no_copies())
    # New rows that would join items an earlier run put in different splits (index: the row's label):
    # `splits` names them ("train, test"), `examples` one assigned row label per split. Left out so
    # that no earlier split changes.
    bridges: pd.DataFrame = field(default_factory=lambda: _no_bridges())
    cuts: tuple[float, float] | None = None
    """A temporal split's cut times (ns since epoch for datetimes): val starts at the first, test at the second."""

    @property
    def merged_rows(self) -> int:
        """Rows that share their group with at least one other row."""
        sizes = self.groups.map(self.groups.value_counts())
        return int((sizes > 1).sum())


# -- public entry points -----------------------------------------------------
def split_by_config(
    df: pd.DataFrame,
    config: SplitConfig,
    *,
    fixed: pd.Series | None = None,
    cuts: tuple[float, float] | None = None,
    draw_holdout: bool = False,
) -> SplitResult:
    """Splits, optional folds over the train rows, the merged groups and the cross-group copies, as the config says.

    Args:
        fixed: per row (on df's index), the split an earlier run gave it ("train", "val", "test",
            "holdout", "gap"), missing for a new row. Assigned rows keep their split.
        cuts: a temporal split's cut times from an earlier run; None cuts at the ratios.
        draw_holdout: draw `config.holdout` (a fraction) as a fourth part of whole groups.

    Raises:
        ValueError: as `assign_splits`, and when rows an earlier run put in different splits are now
            one group (a changed group column or duplicate setting): `reshuffle` re-splits.
    """
    _require_rows(df)
    # The same up-front checks as assign_splits: a missing time or label column is named, not a KeyError later.
    _check_strategy(
        df, config.strategy, group_col=config.group_col, time_col=config.time_col, label_col=config.label_col
    )
    _check_group_columns(
        df, config.group_col, config.text_col, config.embedding_col, config.image_col, config.audio_col
    )
    edges = _duplicate_edges(
        df,
        text_col=config.text_col,
        near_duplicates=config.near_duplicates,
        near_duplicate_threshold=config.near_duplicate_threshold,
        embedding_col=config.embedding_col,
        embedding_threshold=config.embedding_threshold,
        image_col=config.image_col,
        image_max_distance=config.image_max_distance,
        audio_col=config.audio_col,
        audio_max_distance=config.audio_max_distance,
        feature_cols=config.feature_cols,
        feature_decimals=config.feature_decimals,
    )
    codes = _fixed_codes(fixed, df.index)
    copies = _no_copies()
    kept: npt.NDArray[np.bool_] = np.ones(len(df), dtype=np.bool_)
    if config.cross_group_duplicates == "quarantine" and config.group_col is not None:
        copies, kept = _cross_group_copies(
            df, edges, group_col=config.group_col, text_col=config.text_col, assigned=codes != _NEW
        )
    data, edges, codes = df[kept], _edges_among(edges, kept), codes[kept]
    bridges = _no_bridges()
    if config.strategy != "temporal" and (codes != _NEW).any():
        # A temporal split leaves such rows in its gap instead (the earliest copy wins).
        bridges, kept = _bridging_rows(data, edges, codes, group_col=config.group_col)
        data, edges, codes = data[kept], _edges_among(edges, kept), codes[kept]
    base = data[config.group_col] if config.group_col is not None else None
    groups = pd.Series(connected_groups(len(data), edges, base), index=data.index, name="group", dtype=np.int64)
    _require_rows(data)
    if config.strategy == "temporal":
        assert config.time_col is not None  # the config validator guarantees it
        labels, cuts = _assign_temporal(
            data,
            groups.to_numpy(),
            time_col=config.time_col,
            ratios=_check_ratios(config.ratios),
            gap=config.gap,
            fixed=codes,
            cuts=cuts,
        )
        splits = pd.Series(labels, index=data.index, name="split", dtype="str")
    else:
        splits = _place_sticky(data, groups.to_numpy(), codes, config, draw_holdout=draw_holdout)
    folds: pd.Series | None = None
    if config.folds:
        in_train = splits.to_numpy() == "train"
        train_folds = _place_folds(
            data[in_train],
            groups.to_numpy()[in_train],
            k=config.folds,
            seed=config.seed,
            group_col=config.group_col,
            label_col=config.label_col,
            text_col=config.text_col,
        )
        folds = pd.Series(-1, index=data.index, name="fold", dtype=np.int64)
        folds[in_train] = train_folds
    return SplitResult(splits=splits, folds=folds, groups=groups, copies=copies, bridges=bridges, cuts=cuts)


def _fixed_codes(fixed: pd.Series | None, index: pd.Index) -> npt.NDArray[np.int64]:
    """An earlier assignment as codes per row (-1 for new rows)."""
    if fixed is None:
        return np.full(len(index), _NEW, dtype=np.int64)
    if not fixed.index.equals(index):
        raise ValueError("fixed must be on the frame's index (one value or missing per row)")
    known = fixed.dropna()
    bad = sorted(set(known.astype(str)) - set(_CODES))
    if bad:
        raise ValueError(f"fixed splits hold unknown values {bad}; expected {list(_CODES)}")
    mapping = {name: code for code, name in enumerate(_CODES)}
    return np.asarray(fixed.map(mapping).fillna(_NEW), dtype=np.int64)


def _place_sticky(
    data: pd.DataFrame,
    groups: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int64],
    config: SplitConfig,
    *,
    draw_holdout: bool,
) -> pd.Series:
    """Stratified/group placement that keeps every assigned group's split and fills the ratios with the new ones."""
    ratios = _check_ratios(config.ratios)
    names: tuple[str, ...] = SPLITS
    if draw_holdout:
        if not isinstance(config.holdout, float):
            raise ValueError("draw_holdout needs split.holdout to be a fraction")
        ratios = np.append(ratios * (1.0 - config.holdout), config.holdout)
        names = (*SPLITS, HOLDOUT)
    group_code = np.full(int(groups.max()) + 1, _NEW, dtype=np.int64)
    np.maximum.at(group_code, groups, codes)  # one code per group: _bridging_rows and the check below see to it
    _check_one_split_per_group(data, groups, codes, group_code)
    labels = np.empty(len(data), dtype=object)
    frozen = np.isin(group_code[groups], (_HOLDOUT, _GAP))
    labels[frozen] = np.array(_CODES, dtype=object)[group_code[groups[frozen]]]
    free = ~frozen
    sub = data[free]
    dense = pd.factorize(groups[free])[0].astype(np.int64)
    if (codes != _NEW).any():
        # Earlier runs placed most groups already: only new groups move, toward the ratios over all rows.
        prior = np.full(int(dense.max()) + 1 if len(dense) else 0, _NEW, dtype=np.int64)
        np.maximum.at(prior, dense, group_code[groups[free]])
        part = _allocate(dense, _class_codes(sub, config.label_col), ratios, np.random.default_rng(config.seed), prior)
        _check_nonempty(part, ratios, dense, names)
    else:
        part = _place_parts(
            sub,
            dense,
            ratios,
            names,
            seed=config.seed,
            group_col=config.group_col,
            label_col=config.label_col,
            text_col=config.text_col,
        )
    labels[free] = np.array(names, dtype=object)[part]
    return pd.Series(labels, index=data.index, name="split", dtype="str")


def _check_one_split_per_group(
    data: pd.DataFrame,
    groups: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int64],
    group_code: npt.NDArray[np.int64],
) -> None:
    """Rows an earlier run put in different splits must not be one group now (no new row joins them)."""
    assigned = codes != _NEW
    clash = assigned & (codes != group_code[groups])
    if not clash.any():
        return
    row = int(np.flatnonzero(clash)[0])
    other = int(np.flatnonzero(assigned & (groups == groups[row]) & (codes == group_code[groups[row]]))[0])
    raise ValueError(
        f"rows {data.index[row]!r} ({_CODES[codes[row]]}) and {data.index[other]!r} "
        f"({_CODES[codes[other]]}) were put in different splits by an earlier run but are one group now "
        "(the group column or the duplicate settings changed). Restore those settings, or set "
        "split.reshuffle: true for a fresh split (earlier versions may then have trained on test items)"
    )


def _bridging_rows(
    data: pd.DataFrame, edges: npt.NDArray[np.int64], codes: npt.NDArray[np.int64], *, group_col: str | None
) -> tuple[pd.DataFrame, npt.NDArray[np.bool_]]:
    """New rows that would join rows of two different earlier splits, and a mask of the rows kept.

    The new rows form components of their own (their duplicate edges and shared group values among
    themselves); a component touching assigned rows of two or more splits is left out whole, so no
    earlier split changes and nothing leaks. Returns (bridges, kept) as `_cross_group_copies`.
    """
    n = len(data)
    links = edges
    if group_col is not None:
        links = np.concatenate([edges, equal_value_edges(list(data[group_col]))])
    new = codes == _NEW
    new_pos = np.flatnonzero(new)
    remap = np.full(n, -1, dtype=np.int64)
    remap[new_pos] = np.arange(len(new_pos))
    among_new = links[new[links[:, 0]] & new[links[:, 1]]]
    component = connected_groups(len(new_pos), remap[among_new])
    mixed = links[new[links[:, 0]] != new[links[:, 1]]]
    fresh = np.where(new[mixed[:, 0]], mixed[:, 0], mixed[:, 1])
    old = np.where(new[mixed[:, 0]], mixed[:, 1], mixed[:, 0])
    touches = pd.DataFrame({"component": component[remap[fresh]], "code": codes[old], "example": old})
    touches = touches.drop_duplicates(["component", "code"]).sort_values(["component", "code"])
    spread = touches.groupby("component")["code"].transform("nunique")
    touches = touches[spread > 1]
    if touches.empty:
        return _no_bridges(), np.ones(n, dtype=np.bool_)
    per_component = touches.groupby("component").agg(
        splits=("code", lambda c: ", ".join(_CODES[i] for i in c)),
        examples=("example", lambda e: ", ".join(repr(data.index[i]) for i in e)),
    )
    bridge = np.zeros(n, dtype=np.bool_)
    bridge[new_pos] = np.isin(component, per_component.index.to_numpy())
    rows = per_component.loc[component[remap[np.flatnonzero(bridge)]]]
    return pd.DataFrame(rows.to_numpy(), index=data.index[bridge], columns=["splits", "examples"]), ~bridge


def _no_bridges() -> pd.DataFrame:
    return pd.DataFrame({"splits": pd.Series(dtype=str), "examples": pd.Series(dtype=str)})


def assign_splits(
    df: pd.DataFrame,
    *,
    strategy: Strategy,
    seed: int,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    group_col: str | None = None,
    time_col: str | None = None,
    label_col: str | None = None,
    text_col: str | None = None,
    gap: str | float | None = None,
    near_duplicates: NearDuplicates = "minhash",
    near_duplicate_threshold: float = 0.8,
    embedding_col: str | None = None,
    embedding_threshold: float = 0.95,
    image_col: str | None = None,
    image_max_distance: int = 6,
    audio_col: str | None = None,
    audio_max_distance: int = 2,
    feature_cols: Sequence[str] | None = None,
    feature_decimals: int = 6,
) -> pd.Series:
    """Split label per row ("train", "val", "test"; temporal may add "gap"), named "split".

    Same inputs and seed give the same output. See the module docstring for how
    duplicates are merged and what "gap" means.

    Raises:
        ValueError: a named column is missing, ratios are invalid, one group is too
            big for the ratios, a class is too rare to stratify, or timestamps do not parse.
    """
    ratio_arr = _check_ratios(ratios)
    _require_rows(df)
    _check_strategy(df, strategy, group_col=group_col, time_col=time_col, label_col=label_col)
    groups = group_rows(
        df,
        group_col=group_col,
        text_col=text_col,
        near_duplicates=near_duplicates,
        near_duplicate_threshold=near_duplicate_threshold,
        embedding_col=embedding_col,
        embedding_threshold=embedding_threshold,
        image_col=image_col,
        image_max_distance=image_max_distance,
        audio_col=audio_col,
        audio_max_distance=audio_max_distance,
        feature_cols=feature_cols,
        feature_decimals=feature_decimals,
    )
    return _place_splits(
        df,
        groups.to_numpy(),
        strategy=strategy,
        seed=seed,
        ratios=ratio_arr,
        group_col=group_col,
        time_col=time_col,
        label_col=label_col,
        text_col=text_col,
        gap=gap,
    )


def _place_splits(
    df: pd.DataFrame,
    groups: npt.NDArray[np.int64],
    *,
    strategy: Strategy,
    seed: int,
    ratios: npt.NDArray[np.float64],
    group_col: str | None,
    time_col: str | None,
    label_col: str | None,
    text_col: str | None,
    gap: str | float | None,
) -> pd.Series:
    _check_strategy(df, strategy, group_col=group_col, time_col=time_col, label_col=label_col)
    if strategy == "temporal":
        assert time_col is not None  # _check_strategy guarantees it
        labels, _ = _assign_temporal(df, groups, time_col=time_col, ratios=ratios, gap=gap)
    else:
        part = _place_parts(
            df, groups, ratios, SPLITS, seed=seed, group_col=group_col, label_col=label_col, text_col=text_col
        )
        labels = np.array(SPLITS, dtype=object)[part]
    return pd.Series(labels, index=df.index, name="split", dtype="str")


def _check_strategy(
    df: pd.DataFrame, strategy: str, *, group_col: str | None, time_col: str | None, label_col: str | None
) -> None:
    if strategy not in ("stratified", "group", "temporal"):
        raise ValueError(f"strategy={strategy!r} is unknown; use 'stratified', 'group' or 'temporal'")
    if strategy == "group" and group_col is None:
        raise ValueError(
            f"strategy='group' needs group_col; pick one of the columns {list(df.columns)} "
            "(e.g. the user, patient or product id)"
        )
    if strategy == "temporal" and time_col is None:
        raise ValueError(f"strategy='temporal' needs time_col; pick one of the columns {list(df.columns)}")
    for role, col in (("group_col", group_col), ("time_col", time_col), ("label_col", label_col)):
        _require_column(df, col, role)


def _place_parts(
    df: pd.DataFrame,
    groups: npt.NDArray[np.int64],
    ratios: npt.NDArray[np.float64],
    names: Sequence[str],
    *,
    seed: int,
    group_col: str | None,
    label_col: str | None,
    text_col: str | None,
) -> npt.NDArray[np.int64]:
    """Checked group-aware, stratified placement into len(ratios) parts."""
    classes = _class_codes(df, label_col)
    if classes is not None and label_col is not None:
        _check_rare_classes(df[label_col], classes, n_parts=int(np.count_nonzero(ratios)))
    _check_group_sizes(df, groups, ratios, group_col=group_col, text_col=text_col)
    part = _allocate(groups, classes, ratios, np.random.default_rng(seed))
    _check_nonempty(part, ratios, groups, names)
    return part


def assign_folds(
    df: pd.DataFrame,
    *,
    k: int,
    seed: int,
    group_col: str | None = None,
    label_col: str | None = None,
    text_col: str | None = None,
) -> pd.Series:
    """Fold id 0..k-1 per row (stratified group k-fold, duplicates merged), named "fold"."""
    _require_rows(df)
    groups = group_rows(df, group_col=group_col, text_col=text_col).to_numpy()
    folds = _place_folds(df, groups, k=k, seed=seed, group_col=group_col, label_col=label_col, text_col=text_col)
    return pd.Series(folds, index=df.index, name="fold", dtype=np.int64)


def _place_folds(
    df: pd.DataFrame,
    groups: npt.NDArray[np.int64],
    *,
    k: int,
    seed: int,
    group_col: str | None,
    label_col: str | None,
    text_col: str | None,
) -> npt.NDArray[np.int64]:
    if k < 2:
        raise ValueError(f"k={k} folds is not cross-validation; use k >= 2")
    _require_column(df, label_col, "label_col")
    _require_column(df, group_col, "group_col")
    # Groups come from a larger frame when folding the train rows: renumber densely.
    dense = pd.factorize(groups)[0].astype(np.int64)
    return _place_parts(
        df,
        dense,
        np.full(k, 1.0 / k),
        [f"fold {i}" for i in range(k)],
        seed=seed,
        group_col=group_col,
        label_col=label_col,
        text_col=text_col,
    )


def group_rows(
    df: pd.DataFrame,
    *,
    group_col: str | None = None,
    text_col: str | None = None,
    near_duplicates: NearDuplicates = "minhash",
    near_duplicate_threshold: float = 0.8,
    embedding_col: str | None = None,
    embedding_threshold: float = 0.95,
    image_col: str | None = None,
    image_max_distance: int = 6,
    audio_col: str | None = None,
    audio_max_distance: int = 2,
    feature_cols: Sequence[str] | None = None,
    feature_decimals: int = 6,
) -> pd.Series:
    """Merged group id per row: the user's groups joined with every kind of duplicate, named "group"."""
    _check_group_columns(df, group_col, text_col, embedding_col, image_col, audio_col)
    edges = _duplicate_edges(
        df,
        text_col=text_col,
        near_duplicates=near_duplicates,
        near_duplicate_threshold=near_duplicate_threshold,
        embedding_col=embedding_col,
        embedding_threshold=embedding_threshold,
        image_col=image_col,
        image_max_distance=image_max_distance,
        audio_col=audio_col,
        audio_max_distance=audio_max_distance,
        feature_cols=feature_cols,
        feature_decimals=feature_decimals,
    )
    base = df[group_col] if group_col is not None else None
    ids = connected_groups(len(df), edges, base)
    return pd.Series(ids, index=df.index, name="group", dtype=np.int64)


def _check_group_columns(
    df: pd.DataFrame,
    group_col: str | None,
    text_col: str | None,
    embedding_col: str | None,
    image_col: str | None,
    audio_col: str | None = None,
) -> None:
    for role, col in (
        ("group_col", group_col),
        ("text_col", text_col),
        ("embedding_col", embedding_col),
        ("image_col", image_col),
        ("audio_col", audio_col),
    ):
        _require_column(df, col, role)


def _duplicate_edges(
    df: pd.DataFrame,
    *,
    text_col: str | None,
    near_duplicates: NearDuplicates,
    near_duplicate_threshold: float,
    embedding_col: str | None,
    embedding_threshold: float,
    image_col: str | None,
    image_max_distance: int,
    audio_col: str | None,
    audio_max_distance: int,
    feature_cols: Sequence[str] | None,
    feature_decimals: int,
) -> npt.NDArray[np.int64]:
    """Edges (pairs of row positions) joining every kind of duplicate the settings ask for."""
    if near_duplicates not in ("minhash", "embedding", "none"):
        raise ValueError(f"near_duplicates={near_duplicates!r} is unknown; use 'minhash', 'embedding' or 'none'")
    columns = {
        "text_col": text_col,
        "image_col": image_col,
        "audio_col": audio_col,
        "feature_cols": list(feature_cols or []) or None,
    }
    settings = DuplicateSettings(
        near_duplicates=near_duplicates,
        near_duplicate_threshold=near_duplicate_threshold,
        image_max_distance=image_max_distance,
        audio_max_distance=audio_max_distance,
        feature_decimals=feature_decimals,
    )
    # Each modality whose columns are set keys its own duplicates (text: MinHash or exact after
    # normalisation; images: perceptual hash; tabular: equal rounded features).
    edges: list[npt.NDArray[np.int64]] = [
        modality.duplicate_edges(df, columns, settings)
        for modality in registered_modalities()
        if all(columns.get(role.keyword) for role in modality.roles)
    ]
    if near_duplicates == "embedding":
        if embedding_col is None:
            raise ValueError('near_duplicates="embedding" needs embedding_col (a column of vectors)')
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in df[embedding_col]])
        edges.append(as_edges(find_embedding_duplicates(matrix, threshold=embedding_threshold)))
    return np.concatenate(edges) if edges else np.empty((0, 2), dtype=np.int64)


def _cross_group_copies(
    df: pd.DataFrame,
    edges: npt.NDArray[np.int64],
    *,
    group_col: str,
    text_col: str | None,
    assigned: npt.NDArray[np.bool_] | None = None,
) -> tuple[pd.DataFrame, npt.NDArray[np.bool_]]:
    """The rows that duplicate a row of another group (see SplitResult.copies), and a mask of the rows kept.

    Duplicate clusters are the components of the duplicate edges alone. A cluster belongs to the group
    of its first row (in row order) that has a group value; its rows in other groups are copies, its
    rows in that group or without a group value stay. No kept duplicate then links two groups.
    Rows an earlier run assigned (`assigned`) come first: a new copy never pushes out an item that
    kept its split, and of two assigned items that copy each other (one left a snapshot and came
    back), the first keeps its place and the other is the copy.
    """
    n = len(df)
    clusters = connected_groups(n, edges)
    codes = pd.factorize(df[group_col].reset_index(drop=True), use_na_sentinel=True)[0].astype(np.int64)
    has_group = codes >= 0
    positions = np.arange(n, dtype=np.int64)
    old = assigned if assigned is not None else np.zeros(n, dtype=np.bool_)
    rank = np.where(old, positions, positions + n)  # assigned rows before new ones, each in row order
    first = np.full(int(clusters.max()) + 1, 2 * n, dtype=np.int64)  # 2n: the cluster has no row with a group
    np.minimum.at(first, clusters[has_group], rank[has_group])
    owned = first[clusters] < 2 * n
    owner = first[clusters] % n
    owner_code = np.where(owned, codes[np.minimum(owner, n - 1)], -1)
    copy = owned & has_group & (codes != owner_code)
    if not copy.any():
        return _no_copies(), ~copy
    copy_pos, original_pos = positions[copy], owner[copy]
    copies = pd.DataFrame(
        {"original": df.index[original_pos], "kind": _copy_kinds(df, copy_pos, original_pos, text_col)},
        index=df.index[copy_pos],
    )
    return copies, ~copy


def _copy_kinds(
    df: pd.DataFrame, copies: npt.NDArray[np.int64], originals: npt.NDArray[np.int64], text_col: str | None
) -> list[str]:
    if text_col is None:
        return ["duplicate"] * len(copies)
    texts = column_texts(df[text_col])
    kinds = []
    for c, o in zip(copies.tolist(), originals.tolist(), strict=True):
        if texts[c] == texts[o]:
            kinds.append("exact")
        elif canonical_text(texts[c]) == canonical_text(texts[o]):
            kinds.append("normalised")
        else:
            kinds.append("near")
    return kinds


def _no_copies() -> pd.DataFrame:
    return pd.DataFrame({"original": pd.Series(dtype=object), "kind": pd.Series(dtype=str)})


def _edges_among(edges: npt.NDArray[np.int64], kept: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """The edges between kept rows, renumbered to positions among the kept rows."""
    if kept.all():
        return edges
    new_pos = np.cumsum(kept) - 1
    both = kept[edges[:, 0]] & kept[edges[:, 1]]
    return new_pos[edges[both]].astype(np.int64)


def write_split_manifest(ids: pd.Series, splits: pd.Series, folds: pd.Series | None, path: Path) -> str:
    """Write (item_id, split[, fold]) sorted by item_id as Parquet; return the file's sha256.

    The bytes depend only on the inputs (and the pyarrow version): no pandas index
    or metadata, fixed compression, no timestamps, so equal splits hash equal.
    """
    if not ids.index.equals(splits.index) or (folds is not None and not ids.index.equals(folds.index)):
        raise ValueError("ids, splits and folds must share one index (pass columns of the same frame)")
    if ids.isna().any():
        raise ValueError(f"{int(ids.isna().sum())} item ids are missing; every row needs an id")
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        raise ValueError(
            f"item ids must be unique; {dup.nunique()} repeat, e.g. {dup.unique()[:5].tolist()}. "
            "Drop duplicate rows or build ids from the content hash"
        )
    bad = sorted(set(splits.unique()) - set(_CODES))
    if bad:
        raise ValueError(f"splits hold unknown values {bad}; expected {list(_CODES)}")
    try:
        order = np.argsort(ids.to_numpy(), kind="stable")
    except TypeError as err:
        raise ValueError(f"item ids of mixed types cannot be sorted ({err}); cast them to str first") from err
    columns: dict[str, pa.Array] = {
        "item_id": pa.array(ids.to_numpy()[order]),
        "split": pa.array(splits.to_numpy(dtype=object)[order], type=pa.string()),
    }
    if folds is not None:
        columns["fold"] = pa.array(folds.to_numpy(dtype=np.int64)[order], type=pa.int32())
    table = pa.table(columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        compression_level=3,
        use_dictionary=["split"],
        write_statistics=True,
        # The page index and the stored Arrow schema are deterministic, but keep the
        # file minimal: readers get the same columns from the Parquet schema.
        store_schema=False,
        write_page_index=False,
    )
    os.replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- placement ---------------------------------------------------------------
def _allocate(
    groups: npt.NDArray[np.int64],
    classes: npt.NDArray[np.int64] | None,
    ratios: npt.NDArray[np.float64],
    rng: np.random.Generator,
    placed: npt.NDArray[np.int64] | None = None,
) -> npt.NDArray[np.int64]:
    """Part index per row; every group whole in one part, each part's label mix near its target.

    Multi-row groups go first, largest first (ties in seeded random order), each to
    the part where it raises the chi-square distance between the part's class
    counts and their targets least (the greedy of sklearn's StratifiedGroupKFold,
    with targets from the ratios). Single rows then fill each class's remaining
    quota exactly (largest remainder), which makes an ungrouped split exactly
    stratified. Groups with a part in `placed` (per group; -1: free) stay there and
    count toward their part's fill first, so the targets hold over all rows.
    """
    n = len(groups)
    cls = classes if classes is not None else np.zeros(n, dtype=np.int64)
    n_classes = int(cls.max()) + 1
    n_groups = int(groups.max()) + 1
    n_parts = len(ratios)
    counts = np.bincount(groups * n_classes + cls, minlength=n_groups * n_classes).reshape(n_groups, n_classes)
    sizes = counts.sum(axis=1)
    total = counts.sum(axis=0)
    target = ratios[:, None] * total[None, :]
    filled = np.zeros((n_parts, n_classes), dtype=np.float64)
    group_part = np.full(n_groups, -1, dtype=np.int64)
    if placed is not None:
        held = np.flatnonzero(placed >= 0)
        group_part[held] = placed[held]
        np.add.at(filled, placed[held], counts[held])

    multi = np.flatnonzero((sizes > 1) & (group_part < 0))
    order = multi[np.lexsort((rng.permutation(len(multi)), -sizes[multi]))]
    # A part with target 0 for a class must never take it: divide by a tiny number.
    safe_target = np.where(target > 0, target, 1e-9)
    for g in order:
        vec = counts[g]
        nz = vec > 0
        v = vec[nz]
        delta = ((2.0 * (filled[:, nz] - target[:, nz]) + v) * v / safe_target[:, nz]).sum(axis=1)
        part = int(np.argmin(delta))
        group_part[g] = part
        filled[part] += vec

    row_part = group_part[groups]
    single_rows = np.flatnonzero((sizes[groups] == 1) & (row_part < 0))
    for c in range(n_classes):
        rows = single_rows[cls[single_rows] == c]
        if len(rows) == 0:
            continue
        final = _apportion(int(total[c]), ratios)
        need = np.maximum(final - filled[:, c], 0.0)
        if need.sum() == 0:  # placed groups already overfill every part: spread by the ratios
            need = ratios.astype(np.float64)
        quota = _apportion(len(rows), need)
        shuffled = rows[rng.permutation(len(rows))]
        row_part[shuffled] = np.repeat(np.arange(n_parts), quota)
    return row_part


def _apportion(total: int, weights: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Integers summing to `total`, proportional to `weights` (largest remainder; ties to the first)."""
    exact = total * weights / weights.sum()
    base = np.floor(exact).astype(np.int64)
    left = total - int(base.sum())
    if left:
        order = np.lexsort((np.arange(len(weights)), -(exact - base)))
        base[order[:left]] += 1
    return base


def _assign_temporal(
    df: pd.DataFrame,
    groups: npt.NDArray[np.int64],
    *,
    time_col: str,
    ratios: npt.NDArray[np.float64],
    gap: str | float | None,
    fixed: npt.NDArray[np.int64] | None = None,
    cuts: tuple[float, float] | None = None,
) -> tuple[npt.NDArray[np.object_], tuple[float, float]]:
    """Labels by time, and the two cut times (kept from an earlier run when `cuts` is given).

    With `fixed`, assigned rows keep their split; a new row takes the window of its time unless its
    group already sits in another split (then it is a gap row), and joins a holdout group.
    """
    times, gap_value = _parse_times(df[time_col], time_col, gap)
    n = len(times)
    if cuts is None:
        sorted_times = np.sort(times)
        found = []
        for frac in (ratios[0], ratios[0] + ratios[1]):
            pos = int(round(n * frac))
            # Cut at a timestamp, not a row: equal timestamps stay in one split.
            found.append(float(sorted_times[pos]) if pos < n else float("inf"))
        cuts = (found[0], found[1])
    part = np.searchsorted(np.asarray(cuts, dtype=np.float64), times.astype(np.float64), side="right")
    excluded = np.zeros(n, dtype=bool)
    if gap_value:
        for cut in cuts:
            excluded |= (times >= cut - gap_value) & (times < cut)
    codes = fixed if fixed is not None else np.full(n, _NEW, dtype=np.int64)
    new = codes == _NEW
    # The earliest placed copy of a group wins; later copies would leak backwards. A group an earlier
    # run placed keeps that split: its new rows elsewhere in time are gap rows.
    kept_part = np.where(excluded, len(SPLITS), part)
    placed = ~new & (codes < len(SPLITS))
    first_part = np.full(int(groups.max()) + 1, len(SPLITS), dtype=np.int64)
    np.minimum.at(first_part, groups[new], kept_part[new])
    first_placed = np.full(len(first_part), len(SPLITS), dtype=np.int64)
    np.minimum.at(first_placed, groups[placed], codes[placed])
    group_part = np.where(first_placed < len(SPLITS), first_placed, first_part)
    excluded |= kept_part != group_part[groups]
    labels = np.array(SPLITS, dtype=object)[np.minimum(part, len(SPLITS) - 1)]
    labels[excluded] = GAP
    holdout_group = np.zeros(len(group_part), dtype=bool)
    holdout_group[groups[codes == _HOLDOUT]] = True
    labels[new & holdout_group[groups]] = HOLDOUT
    labels[~new] = np.array(_CODES, dtype=object)[codes[~new]]
    for i, name in enumerate(SPLITS):
        if ratios[i] > 0 and not (labels == name).any():
            raise ValueError(
                f"temporal split left '{name}' empty: {time_col!r} has {len(np.unique(times))} distinct "
                f"values{f' and gap={gap!r} excludes {int(excluded.sum())} rows' if gap_value else ''}. "
                "Use a smaller gap, other ratios, or strategy='stratified'"
            )
    return labels, cuts


def _parse_times(values: pd.Series, time_col: str, gap: str | float | None) -> tuple[npt.NDArray[np.float64], float]:
    """Times as float (ns since epoch for datetimes) and the gap in the same unit."""
    missing = values.isna()
    if missing.any():
        rows = values.index[missing][:5].tolist()
        raise ValueError(
            f"{int(missing.sum())} rows have no value in time column {time_col!r} (e.g. rows {rows}); "
            "drop them or fill them before a temporal split"
        )
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if isinstance(gap, str):
            raise ValueError(
                f"gap={gap!r} is a duration but time column {time_col!r} is numeric; give the gap as a number"
            )
        return values.to_numpy(dtype=np.float64), float(gap or 0.0)
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        bad = parsed.isna()
        if bad.any():
            examples = values[bad].astype(str).unique()[:5].tolist()
            raise ValueError(
                f"{int(bad.sum())} values in time column {time_col!r} are not timestamps, e.g. {examples}; "
                "fix or drop those rows, or parse the column with pd.to_datetime(format=...) first"
            )
    if gap is None:
        gap_ns = 0.0
    elif isinstance(gap, str):
        try:
            gap_ns = float(pd.Timedelta(gap).value)
        except ValueError as err:
            raise ValueError(f"gap={gap!r} is not a pandas Timedelta string; use e.g. '7D' or '12h'") from err
    else:
        raise ValueError(f"gap={gap!r} must be a Timedelta string such as '7D' for datetime column {time_col!r}")
    ns = parsed.dt.tz_localize(None).astype("datetime64[ns]").to_numpy().view(np.int64)
    return ns.astype(np.float64), gap_ns


# -- checks that name the fix --------------------------------------------------
def _check_ratios(ratios: Sequence[float]) -> npt.NDArray[np.float64]:
    arr = np.asarray(ratios, dtype=np.float64)
    if arr.shape != (3,) or (arr < 0).any() or not np.isclose(arr.sum(), 1.0, atol=1e-6) or arr[0] <= 0:
        raise ValueError(
            f"ratios={tuple(ratios)} must be three non-negative numbers (train, val, test) summing to 1 "
            "with train > 0, e.g. (0.8, 0.1, 0.1)"
        )
    return arr


def _require_rows(df: pd.DataFrame) -> None:
    if len(df) == 0:
        raise ValueError("the frame to split has no rows; check the previous stage's output")


def _require_column(df: pd.DataFrame, col: str | None, role: str) -> None:
    if col is not None and col not in df.columns:
        raise ValueError(f"{role}={col!r} is not a column; available columns: {list(df.columns)}")


def _class_codes(df: pd.DataFrame, label_col: str | None) -> npt.NDArray[np.int64] | None:
    if label_col is None:
        return None
    # Missing labels stratify as their own class rather than vanishing.
    codes, _ = pd.factorize(df[label_col].astype(object).where(df[label_col].notna(), "<missing>"), sort=True)
    return codes.astype(np.int64)


def _check_rare_classes(labels: pd.Series, classes: npt.NDArray[np.int64], *, n_parts: int) -> None:
    counts = np.bincount(classes)
    rare = np.flatnonzero(counts < n_parts)
    if len(rare):
        names = labels.astype(object).where(labels.notna(), "<missing>").to_numpy()
        examples = ", ".join(f"{names[np.flatnonzero(classes == c)[0]]!r} ({counts[c]} rows)" for c in rare[:5])
        raise ValueError(
            f"classes too rare to stratify into {n_parts} parts: {examples}. Each class needs at least "
            f"{n_parts} rows; merge rare classes, drop them, or pass label_col=None for an unstratified "
            "(random) split, or strategy='group'"
        )


def _check_group_sizes(
    df: pd.DataFrame,
    groups: npt.NDArray[np.int64],
    ratios: npt.NDArray[np.float64],
    *,
    group_col: str | None,
    text_col: str | None,
) -> None:
    sizes = np.bincount(groups)
    biggest = int(np.argmax(sizes))
    share = sizes[biggest] / len(groups)
    if share <= ratios.max() + _GROUP_SHARE_SLACK:
        return
    rows = np.flatnonzero(groups == biggest)
    if group_col is not None:
        values = [v.item() if isinstance(v, np.generic) else v for v in pd.unique(df[group_col].iloc[rows].dropna())]
        more = f" (merged by duplicates with {len(values) - 1} more values)" if len(values) > 1 else ""
        name = f"{group_col}={values[0]!r}{more}"
    elif text_col is not None:
        sample = str(df[text_col].iloc[rows[0]])[:60]
        name = f"a cluster of duplicate texts like {sample!r}"
    else:
        name = "one group"
    raise ValueError(
        f"{name} holds {share:.0%} of the rows ({sizes[biggest]} of {len(groups)}), more than the largest "
        f"ratio {ratios.max():.0%}, so ratios {tuple(ratios.round(3).tolist())} cannot be met. "
        "Group by a finer column, drop or cap that group, raise near_duplicate_threshold (or lower "
        "image_max_distance) if duplicates chained it together, or use strategy='temporal'"
    )


def _check_nonempty(
    part: npt.NDArray[np.int64],
    ratios: npt.NDArray[np.float64],
    groups: npt.NDArray[np.int64],
    names: Sequence[str] = SPLITS,
) -> None:
    counts = np.bincount(part, minlength=len(ratios))
    for i, name in enumerate(names):
        if ratios[i] > 0 and counts[i] == 0:
            raise ValueError(
                f"'{name}' got no rows: {len(part)} rows in {int(groups.max()) + 1} groups cannot fill "
                f"ratios {tuple(np.round(ratios, 3).tolist())}. Add data, use fewer folds or larger "
                "ratios, or a finer group_col"
            )
