"""Clean data bigger than memory a partition at a time, with the answer a single pass over all of it gives.

The row-level steps (text normalisation, dropping rows with a missing value) run on each partition alone.
The table-level ones need the whole data, so they are learned first in streaming passes that keep only
small summaries, then applied partition by partition:

- imputation by mode, median or mean: value counts or the column's numbers (8 bytes a row);
- exact duplicates: a 64-bit hash of each row's key columns (`tasks.rowhash`), counted across partitions
  (`OccurrenceCounter`); only the keys that repeat are remembered with the id of their first row;
- outlier bounds: the rule's column as numbers, for the rows that survive the earlier steps.

`clean_parquet` reads a snapshot's Parquet a batch at a time (the partitions), writes the kept rows to
another Parquet file and returns the quarantine, the same rows with the same reasons as `clean_frame`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import rowhash
from tasks.clean import (
    CleanConfig,
    OutlierBounds,
    _data_columns,
    _impute_value,
    _missing_mask,
    _require,
    learn_outlier_bounds,
    normalize_text,
)
from tasks.columns import ITEM_ID
from tasks.ingest import OccurrenceCounter
from tasks.quarantine import check_conservation, concat_quarantine, quarantine_rows
from tasks.validate import (
    ExpectationOutcome,
    SuiteFileError,
    ValidationOutcome,
    load_suite,
    quarantine_row_level,
    raise_on_failure,
    run_suite,
)

Partitions = Callable[[], Iterator[pd.DataFrame]]
"""A source that can be read again: each call yields the data's partitions in order."""


@dataclass
class CleanPlan:
    """What the table-level steps learned from the whole data; `apply` cleans one partition with it."""

    config: CleanConfig
    fills: dict[str, object]
    dedupe_on: list[str]
    repeated_keys: set[int]
    bounds: list[OutlierBounds]
    _first_ids: dict[int, str] = field(default_factory=dict)

    def apply(self, partition: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame], dict[str, int]]:
        """The partition's kept rows, its quarantine per step (in `clean_frame`'s order) and imputed counts.

        Partitions must come in order: the first row of each repeated key is the one kept.
        """
        data, parts, imputed = _missing_step(_normalized(partition, self.config), self.config, self.fills)
        if self.dedupe_on:
            keys, complete = _keys(data, self.dedupe_on)
            duplicate = np.zeros(len(data), dtype=bool)
            reasons = []
            on = ", ".join(self.dedupe_on)
            repeated = np.fromiter(self.repeated_keys, dtype=np.uint64, count=len(self.repeated_keys))
            for i in np.flatnonzero(complete & np.isin(keys, repeated)):  # few: only rows whose key repeats
                key = int(keys[i])
                first = self._first_ids.setdefault(key, str(data[ITEM_ID].iloc[i]))
                if first != data[ITEM_ID].iloc[i]:
                    duplicate[i] = True
                    reasons.append(f"exact duplicate of item {first} on {on}")
            parts.append(quarantine_rows(data[duplicate], step="dedupe", reason=reasons))
            data = data[~duplicate]
        for bounds in self.bounds:
            mask = bounds.mask(data[bounds.rule.column])
            reason = f'"{bounds.rule.column}" {bounds.reason()}'
            parts.append(quarantine_rows(data[mask], step="outliers", reason=reason))
            data = data[~mask]
        return data, parts, imputed


def _normalized(partition: pd.DataFrame, config: CleanConfig) -> pd.DataFrame:
    data = partition.copy()
    for column in config.normalize_text:
        _require(data, column, "normalize_text")
        data[column] = normalize_text(data[column])
    return data


def _missing_step(
    data: pd.DataFrame, config: CleanConfig, fills: dict[str, object]
) -> tuple[pd.DataFrame, list[pd.DataFrame], dict[str, int]]:
    """The missing-value policies in order: drops quarantine, imputes fill with `fills` (one part per policy)."""
    parts, imputed = [], {}
    for column, policy in config.missing.items():
        _require(data, column, "missing")
        mask = _missing_mask(data[column])
        if policy.action == "drop":
            parts.append(quarantine_rows(data[mask], step="missing", reason=f'missing value in "{column}"'))
            data = data[~mask]
        elif mask.any():
            data[column] = data[column].where(~mask, fills[column])
            imputed[column] = int(mask.sum())
    return data, parts, imputed


def _keys(data: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A hash of each row's key columns, and which rows have every key (a missing key is no one's duplicate)."""
    complete = ~pd.concat([_missing_mask(data[c]) for c in columns], axis=1).any(axis=1).to_numpy()
    table = pa.Table.from_pandas(data[columns], preserve_index=False)
    return rowhash.hash_rows(table), complete


def _learn_fills(read: Partitions, config: CleanConfig) -> dict[str, object]:
    """Each impute policy's value over the whole data, as `clean_frame` computes it (after the earlier drops)."""
    learned = {c: p for c, p in config.missing.items() if p.action == "impute" and p.strategy != "constant"}
    fills: dict[str, object] = {c: p.value for c, p in config.missing.items() if p.action == "impute"}
    if not learned:
        return fills
    counts: dict[str, pd.Series] = {}
    numbers: dict[str, list[pd.Series]] = {c: [] for c in learned}
    for partition in read():
        data = _normalized(partition, config)
        for column, policy in config.missing.items():
            _require(data, column, "missing")
            mask = _missing_mask(data[column])
            if policy.action == "drop":
                data = data[~mask]
            elif column in learned and policy.strategy == "mode":
                seen = data.loc[~mask, column].value_counts()
                counts[column] = seen if column not in counts else counts[column].add(seen, fill_value=0)
            elif column in learned:
                numbers[column].append(pd.to_numeric(data.loc[~mask, column], errors="coerce"))
    for column, policy in learned.items():
        if policy.strategy == "mode":
            seen = counts.get(column, pd.Series(dtype="int64"))
            fills[column] = min(seen.index[seen == seen.max()]) if not seen.empty else policy.value
        else:
            values = pd.concat(numbers[column]) if numbers[column] else pd.Series(dtype="float64")
            fills[column] = _impute_value(values, policy, column)
    return fills


def plan_clean(read: Partitions, config: CleanConfig) -> CleanPlan:
    """Stream the partitions to learn the table-level steps: fills, repeated keys and outlier bounds.

    Raises:
        ValueError: a configured column is absent or a policy does not fit its column.
    """
    fills = _learn_fills(read, config)
    counter = OccurrenceCounter()
    repeated: set[int] = set()
    dedupe_on: list[str] | None = config.dedupe_on
    survivors: dict[str, list[pd.Series]] = {r.column: [] for r in config.outliers}
    for partition in read():
        data = _missing_step(_normalized(partition, config), config, fills)[0]
        if dedupe_on is None:
            dedupe_on = _data_columns(data)
        for column in dedupe_on:
            _require(data, column, "dedupe_on")
        if dedupe_on:
            keys, complete = _keys(data, dedupe_on)
            occurrence = np.zeros(len(data), dtype=np.int64)
            occurrence[complete] = counter.occurrences(keys[complete])
            repeated.update(int(k) for k in keys[occurrence > 0])
            data = data[occurrence == 0]
        for column in survivors:
            _require(data, column, "outliers")
            survivors[column].append(pd.to_numeric(data[column], errors="coerce"))
    bounds = []
    gathered = {c: pd.concat(v, ignore_index=True) if v else pd.Series(dtype="float64") for c, v in survivors.items()}
    for rule in config.outliers:
        learned = learn_outlier_bounds(gathered[rule.column], rule)
        keep = ~learned.mask(gathered[rule.column]).to_numpy()
        gathered = {c: v[keep].reset_index(drop=True) for c, v in gathered.items()}
        bounds.append(learned)
    return CleanPlan(config, fills, dedupe_on or [], repeated, bounds)


@dataclass
class PartitionedClean:
    """The outcome of `clean_parquet`: kept rows are in the target file, the quarantine is here."""

    rows_in: int
    rows_kept: int
    quarantine: pd.DataFrame
    imputed: dict[str, int]
    partitions: int


def clean_parquet(source: Path, target: Path, config: CleanConfig, *, rows_per_partition: int) -> PartitionedClean:
    """Clean a Parquet file `rows_per_partition` rows at a time into `target`; rows are conserved.

    Raises:
        ValueError: a configured column is absent or a policy does not fit its column.
    """

    def read() -> Iterator[pd.DataFrame]:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=rows_per_partition):
            yield batch.to_pandas()

    plan = plan_clean(read, config)
    steps: list[list[pd.DataFrame]] = []
    imputed: dict[str, int] = {}
    rows_in = kept = partitions = 0
    writer: pq.ParquetWriter | None = None
    try:
        for partition in read():
            data, parts, counts = plan.apply(partition)
            check_conservation(len(partition), len(data), sum(len(p) for p in parts), stage="clean")
            rows_in, kept, partitions = rows_in + len(partition), kept + len(data), partitions + 1
            steps = [[*old, new] for old, new in zip(steps, parts, strict=True)] if steps else [[p] for p in parts]
            for column, n in counts.items():
                imputed[column] = imputed.get(column, 0) + n
            table = pa.Table.from_pandas(data, preserve_index=False)
            writer = writer or pq.ParquetWriter(target, table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    quarantine = concat_quarantine([part for step in steps for part in step])
    return PartitionedClean(rows_in, kept, quarantine, imputed, partitions)


# --- validation ------------------------------------------------------------------------------------------
# Each partition runs the suite through GX as it is; the outcomes are then combined as one run over all
# the rows would report them. Row-level (column map) expectations add up their counts and unexpected ids
# and apply `mostly` to the totals, as GX does; the row count is the sum; uniqueness is decided across
# partitions from value hashes (a value repeated in another partition is a duplicate too).

_UNIQUE = "expect_column_values_to_be_unique"
_ROW_COUNT = "expect_table_row_count_to_be_between"
_SAME_IN_EVERY_PARTITION = {"expect_column_to_exist", "expect_table_columns_to_match_set"}


def _mostly_success(expectation: ExpectationOutcome, element_count: int, missing: int, unexpected: int) -> bool:
    """GX's verdict for a column map expectation from its counts: vacuously true without values."""
    considered = element_count - missing
    if element_count == 0 or considered == 0:
        return True
    return (considered - unexpected) / considered >= float(expectation.kwargs.get("mostly") or 1.0)


def _row_count_success(kwargs: dict[str, Any], rows: int) -> bool:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    above = low is None or (rows > low if kwargs.get("strict_min") else rows >= low)
    below = high is None or (rows < high if kwargs.get("strict_max") else rows <= high)
    return above and below


def _value_keys(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    hashes, present = rowhash.value_hashes(pa.array(values, from_pandas=True))
    return hashes, present & values.notna().to_numpy()


def _repeated_values(read: Partitions, columns: list[str]) -> dict[str, np.ndarray]:
    """Per column, the hashes of the values that occur more than once in the whole data (sorted)."""
    counters = {c: OccurrenceCounter() for c in columns}
    repeated: dict[str, set[int]] = {c: set() for c in columns}
    for partition in read():
        for column in columns:
            hashes, present = _value_keys(partition[column])
            later = counters[column].occurrences(hashes[present]) > 0
            repeated[column].update(int(h) for h in hashes[present][later])
    return {c: np.array(sorted(v), dtype=np.uint64) for c, v in repeated.items()}


def _combine(
    expectation: ExpectationOutcome, runs: list[ExpectationOutcome], unique_ids: list[str] | None, rows: int
) -> ExpectationOutcome:
    """One expectation's outcome over all partitions, from its outcome in each."""
    if expectation.type == _ROW_COUNT:
        success = _row_count_success(expectation.kwargs, rows)
        return replace(expectation, success=success, unexpected_count=int(not success), observed=rows)
    if expectation.type in _SAME_IN_EVERY_PARTITION:
        success = all(r.success for r in runs)
        return replace(expectation, success=success, unexpected_count=int(not success))
    if not expectation.type.startswith("expect_column_value"):
        raise SuiteFileError(
            f"{expectation.type} cannot be computed a partition at a time; validate the data in one pass, or use "
            "column value expectations, uniqueness and the row count."
        )
    elements = sum(r.element_count for r in runs)
    missing = sum(r.missing_count for r in runs)
    ids = unique_ids if unique_ids is not None else [i for r in runs for i in r.unexpected_ids]
    return replace(
        expectation,
        success=_mostly_success(expectation, elements, missing, len(ids)),
        unexpected_count=len(ids),
        unexpected_ids=ids,
        element_count=elements,
        missing_count=missing,
    )


def run_suite_partitioned(
    read: Partitions, suite_path: Path, *, gx_root: Path, asset: str, where: str
) -> ValidationOutcome:
    """A suite over every partition, combined into the outcome one run over all the data gives."""
    suite = load_suite(suite_path)
    unique_columns = [e["kwargs"]["column"] for e in suite["expectations"] if e.get("type") == _UNIQUE]
    repeated = _repeated_values(read, unique_columns) if unique_columns else {}
    runs: list[ValidationOutcome] = []
    duplicates: dict[str, list[str]] = {c: [] for c in unique_columns}
    rows = 0
    for partition in read():
        runs.append(run_suite(partition, suite_path, gx_root=gx_root, asset=asset, where=where))
        rows += len(partition)
        for column in unique_columns:
            hashes, present = _value_keys(partition[column])
            hit = present & np.isin(hashes, repeated[column])
            duplicates[column].extend(partition[ITEM_ID].astype(str).to_numpy()[hit].tolist())
    if not runs:
        raise ValueError(f"{where} has no partitions to validate.")
    expectations = []
    for index, first in enumerate(runs[0].expectations):
        unique_ids = duplicates[str(first.column)] if first.type == _UNIQUE else None
        expectations.append(_combine(first, [r.expectations[index] for r in runs], unique_ids, rows))
    return replace(runs[-1], success=all(e.success for e in expectations), expectations=expectations)


def validate_parquet(
    source: Path, target: Path, suite_path: Path, *, gx_root: Path, asset: str, where: str, rows_per_partition: int
) -> ValidationOutcome:
    """`validate_frame` a partition at a time: row-level failures quarantined, the rest written to `target`.

    As in one pass, the suite runs again on the kept rows when some were quarantined, so the verdict
    describes the data that moves on.

    Raises:
        ExpectationGateError: a hard expectation failed on the kept rows.
    """
    dropped: set[str] = set()

    def read() -> Iterator[pd.DataFrame]:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=rows_per_partition):
            frame = batch.to_pandas()
            yield frame[~frame[ITEM_ID].astype(str).isin(dropped)].reset_index(drop=True) if dropped else frame

    quarantine: list[pd.DataFrame] = []
    for _ in range(2):  # a second round only when the first quarantined rows (see validate_frame)
        outcome = run_suite_partitioned(read, suite_path, gx_root=gx_root, asset=asset, where=where)
        parts = [quarantine_row_level(partition, outcome)[1] for partition in read()]
        quarantine += parts
        dropped |= {str(i) for part in parts for i in part[ITEM_ID]}
        if not any(len(part) for part in parts):
            break
    outcome.quarantine = concat_quarantine(quarantine)
    raise_on_failure(outcome)
    _write_partitions(read(), target)
    return outcome


def _write_partitions(partitions: Iterator[pd.DataFrame], target: Path) -> None:
    writer: pq.ParquetWriter | None = None
    try:
        for partition in partitions:
            table = pa.Table.from_pandas(partition, preserve_index=False)
            writer = writer or pq.ParquetWriter(target, table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
