"""Leakage-safe train/val/test splits, k folds, and a byte-stable split manifest.

Before anything is split, rows that are the same item are merged into one group:
the user's `group_col`, exact duplicates of the text (after `normalize_text`),
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

from tasks.neardup import (
    connected_groups,
    find_embedding_duplicates,
    find_image_duplicates,
    hash_rows,
    normalize_text,
    score_near_duplicates,
)

SPLITS: tuple[str, str, str] = ("train", "val", "test")
GAP = "gap"
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
    feature_cols: tuple[str, ...] | None = None  # tabular duplicates: equal rounded features
    feature_decimals: int = 6
    folds: int = Field(0, ge=0)  # k of stratified group k-fold over the train rows; 0 = none
    # A duplicate in another group: quarantine the copy (keep the first occurrence), or merge the groups.
    cross_group_duplicates: CrossGroupDuplicates = "quarantine"
    # Largest total variation distance between val's (test's) label mix and train's before the
    # leakage gate stops the run; None: a warning only. A single-class val/test fails it too.
    max_label_shift: float | None = Field(None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        _check_ratios(self.ratios)
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

    @property
    def merged_rows(self) -> int:
        """Rows that share their group with at least one other row."""
        sizes = self.groups.map(self.groups.value_counts())
        return int((sizes > 1).sum())


# -- public entry points -----------------------------------------------------
def split_by_config(df: pd.DataFrame, config: SplitConfig) -> SplitResult:
    """Splits, optional folds over the train rows, the merged groups and the cross-group copies, as the config says."""
    _require_rows(df)
    # The same up-front checks as assign_splits: a missing time or label column is named, not a KeyError later.
    _check_strategy(
        df, config.strategy, group_col=config.group_col, time_col=config.time_col, label_col=config.label_col
    )
    _check_group_columns(df, config.group_col, config.text_col, config.embedding_col, config.image_col)
    edges = _duplicate_edges(
        df,
        text_col=config.text_col,
        near_duplicates=config.near_duplicates,
        near_duplicate_threshold=config.near_duplicate_threshold,
        embedding_col=config.embedding_col,
        embedding_threshold=config.embedding_threshold,
        image_col=config.image_col,
        image_max_distance=config.image_max_distance,
        feature_cols=config.feature_cols,
        feature_decimals=config.feature_decimals,
    )
    copies = _no_copies()
    kept: npt.NDArray[np.bool_] = np.ones(len(df), dtype=np.bool_)
    if config.cross_group_duplicates == "quarantine" and config.group_col is not None:
        copies, kept = _cross_group_copies(df, edges, group_col=config.group_col, text_col=config.text_col)
    data = df[kept]
    edges = _edges_among(edges, kept)
    base = data[config.group_col] if config.group_col is not None else None
    groups = pd.Series(connected_groups(len(data), edges, base), index=data.index, name="group", dtype=np.int64)
    _require_rows(data)
    splits = _place_splits(
        data,
        groups.to_numpy(),
        strategy=config.strategy,
        seed=config.seed,
        ratios=_check_ratios(config.ratios),
        group_col=config.group_col,
        time_col=config.time_col,
        label_col=config.label_col,
        text_col=config.text_col,
        gap=config.gap,
    )
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
    return SplitResult(splits=splits, folds=folds, groups=groups, copies=copies)


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
        labels = _assign_temporal(df, groups, time_col=time_col, ratios=ratios, gap=gap)
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
    feature_cols: Sequence[str] | None = None,
    feature_decimals: int = 6,
) -> pd.Series:
    """Merged group id per row: the user's groups joined with every kind of duplicate, named "group"."""
    _check_group_columns(df, group_col, text_col, embedding_col, image_col)
    edges = _duplicate_edges(
        df,
        text_col=text_col,
        near_duplicates=near_duplicates,
        near_duplicate_threshold=near_duplicate_threshold,
        embedding_col=embedding_col,
        embedding_threshold=embedding_threshold,
        image_col=image_col,
        image_max_distance=image_max_distance,
        feature_cols=feature_cols,
        feature_decimals=feature_decimals,
    )
    base = df[group_col] if group_col is not None else None
    ids = connected_groups(len(df), edges, base)
    return pd.Series(ids, index=df.index, name="group", dtype=np.int64)


def _check_group_columns(
    df: pd.DataFrame, group_col: str | None, text_col: str | None, embedding_col: str | None, image_col: str | None
) -> None:
    for role, col in (
        ("group_col", group_col),
        ("text_col", text_col),
        ("embedding_col", embedding_col),
        ("image_col", image_col),
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
    feature_cols: Sequence[str] | None,
    feature_decimals: int,
) -> npt.NDArray[np.int64]:
    """Edges (pairs of row positions) joining every kind of duplicate the settings ask for."""
    if near_duplicates not in ("minhash", "embedding", "none"):
        raise ValueError(f"near_duplicates={near_duplicates!r} is unknown; use 'minhash', 'embedding' or 'none'")
    edges: list[npt.NDArray[np.int64]] = []
    if text_col is not None:
        texts = _texts(df[text_col])
        if near_duplicates == "minhash":
            pairs, _ = score_near_duplicates(texts, threshold=near_duplicate_threshold)
            edges.append(pairs)
        else:
            # Exact duplicates after normalisation are merged whatever the near-duplicate mode.
            edges.append(_equal_value_edges([normalize_text(t) or None for t in texts]))
    if near_duplicates == "embedding":
        if embedding_col is None:
            raise ValueError('near_duplicates="embedding" needs embedding_col (a column of vectors)')
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in df[embedding_col]])
        edges.append(_as_edges(find_embedding_duplicates(matrix, threshold=embedding_threshold)))
    if image_col is not None:
        images = list(df[image_col])
        edges.append(_as_edges(find_image_duplicates(images, max_distance=image_max_distance)))
    if feature_cols:
        edges.append(_equal_value_edges(list(hash_rows(df, feature_cols, decimals=feature_decimals))))
    return np.concatenate(edges) if edges else np.empty((0, 2), dtype=np.int64)


def _cross_group_copies(
    df: pd.DataFrame, edges: npt.NDArray[np.int64], *, group_col: str, text_col: str | None
) -> tuple[pd.DataFrame, npt.NDArray[np.bool_]]:
    """The rows that duplicate a row of another group (see SplitResult.copies), and a mask of the rows kept.

    Duplicate clusters are the components of the duplicate edges alone. A cluster belongs to the group
    of its first row (in row order) that has a group value; its rows in other groups are copies, its
    rows in that group or without a group value stay. No kept duplicate then links two groups.
    """
    n = len(df)
    clusters = connected_groups(n, edges)
    codes = pd.factorize(df[group_col].reset_index(drop=True), use_na_sentinel=True)[0].astype(np.int64)
    has_group = codes >= 0
    positions = np.arange(n, dtype=np.int64)
    first = np.full(int(clusters.max()) + 1, n, dtype=np.int64)  # n: the cluster has no row with a group
    np.minimum.at(first, clusters[has_group], positions[has_group])
    owner = first[clusters]
    owned = owner < n
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
    texts = _texts(df[text_col])
    kinds = []
    for c, o in zip(copies.tolist(), originals.tolist(), strict=True):
        if texts[c] == texts[o]:
            kinds.append("exact")
        elif normalize_text(texts[c]) == normalize_text(texts[o]):
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
    bad = sorted(set(splits.unique()) - {*SPLITS, GAP})
    if bad:
        raise ValueError(f"splits hold unknown values {bad}; expected {[*SPLITS, GAP]}")
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
) -> npt.NDArray[np.int64]:
    """Part index per row; every group whole in one part, each part's label mix near its target.

    Multi-row groups go first, largest first (ties in seeded random order), each to
    the part where it raises the chi-square distance between the part's class
    counts and their targets least (the greedy of sklearn's StratifiedGroupKFold,
    with targets from the ratios). Single rows then fill each class's remaining
    quota exactly (largest remainder), which makes an ungrouped split exactly
    stratified.
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

    multi = np.flatnonzero(sizes > 1)
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
    single_rows = np.flatnonzero(sizes[groups] == 1)
    for c in range(n_classes):
        rows = single_rows[cls[single_rows] == c]
        if len(rows) == 0:
            continue
        final = _apportion(int(total[c]), ratios)
        need = np.maximum(final - filled[:, c], 0.0)
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
) -> npt.NDArray[np.object_]:
    times, gap_value = _parse_times(df[time_col], time_col, gap)
    n = len(times)
    sorted_times = np.sort(times)
    cuts = []
    for frac in (ratios[0], ratios[0] + ratios[1]):
        pos = int(round(n * frac))
        # Cut at a timestamp, not a row: equal timestamps stay in one split.
        cuts.append(sorted_times[pos] if pos < n else np.inf)
    part = np.searchsorted(np.asarray(cuts, dtype=np.float64), times.astype(np.float64), side="right")
    excluded = np.zeros(n, dtype=bool)
    if gap_value:
        for cut in cuts:
            excluded |= (times >= cut - gap_value) & (times < cut)
    # The earliest placed copy of a group wins; later copies would leak backwards.
    kept_part = np.where(excluded, len(SPLITS), part)
    first_part = np.full(int(groups.max()) + 1, len(SPLITS), dtype=np.int64)
    np.minimum.at(first_part, groups, kept_part)
    excluded |= kept_part > first_part[groups]
    labels = np.array(SPLITS, dtype=object)[part]
    labels[excluded] = GAP
    for i, name in enumerate(SPLITS):
        if ratios[i] > 0 and not (labels == name).any():
            raise ValueError(
                f"temporal split left '{name}' empty: {time_col!r} has {len(np.unique(times))} distinct "
                f"values{f' and gap={gap!r} excludes {int(excluded.sum())} rows' if gap_value else ''}. "
                "Use a smaller gap, other ratios, or strategy='stratified'"
            )
    return labels


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


# -- small helpers -------------------------------------------------------------
def _texts(values: pd.Series) -> list[str]:
    return ["" if pd.isna(v) else str(v) for v in values]


def _equal_value_edges(values: Sequence[object]) -> npt.NDArray[np.int64]:
    """Star edges joining rows with equal non-missing values."""
    codes, _ = pd.factorize(pd.Series(list(values), dtype=object), use_na_sentinel=True)
    rows = np.flatnonzero(codes >= 0)
    if len(rows) == 0:
        return np.empty((0, 2), dtype=np.int64)
    first = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    # Reverse assignment leaves each code's first row in `first`.
    first[codes[rows[::-1]]] = rows[::-1]
    anchor = first[codes[rows]]
    keep = anchor != rows
    return np.stack([anchor[keep], rows[keep]], axis=1).astype(np.int64)


def _as_edges(pairs: list[tuple[int, int]]) -> npt.NDArray[np.int64]:
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
