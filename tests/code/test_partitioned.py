"""Cleaning a partition at a time gives the single-pass answer: the same kept rows, the same quarantine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.clean import CleanConfig, MissingPolicy, OutlierRule, clean_frame
from tasks.demo_data import rotten_tomatoes_frame
from tasks.partitioned import clean_parquet, validate_parquet
from tasks.validate import ValidationOutcome, validate_frame

ROWS_PER_PARTITION = 23  # the data below spans 14 partitions; duplicates and outliers fall in different ones


def _reviews() -> pd.DataFrame:
    """Real review snippets with what cleaning must catch spread over the file: repeats far apart
    (one only equal after text normalisation), missing texts and scores, numeric outliers."""
    rng = np.random.default_rng(3)
    frame = rotten_tomatoes_frame(300)[["text", "movie_name", "category"]]
    frame = frame.assign(score=np.round(rng.normal(6, 1, len(frame)), 1), votes=rng.integers(10, 60, len(frame)))
    repeats = frame.iloc[[2, 40, 41, 150]].copy()
    repeats.iloc[0, 0] = "  " + str(repeats.iloc[0, 0]).replace(" ", "\t ") + " "  # equal once normalised
    frame = pd.concat([frame, repeats, frame.iloc[[40]]], ignore_index=True)
    frame.loc[[5, 77, 250], "text"] = [None, "", "   "]
    frame.loc[[9, 120, 299], "score"] = np.nan
    frame.loc[[30, 200], "score"] = [60.0, -40.0]
    frame.loc[[10, 260], "votes"] = [5_000, 4_000]
    frame.loc[[11, 12, 13], "movie_name"] = None
    frame.insert(0, "item_id", [f"r{i:03d}" for i in range(len(frame))])
    return frame


CONFIGS = {
    "every step": CleanConfig(
        normalize_text=["text"],
        missing={
            "text": MissingPolicy(action="drop"),
            "score": MissingPolicy(action="impute", strategy="median"),
            "movie_name": MissingPolicy(action="impute", strategy="mode"),
        },
        outliers=[OutlierRule(column="score", method="iqr", k=1.5), OutlierRule(column="votes", method="zscore", k=3)],
    ),
    "dedupe on text, mean": CleanConfig(
        normalize_text=["text"],
        missing={"score": MissingPolicy(action="impute", strategy="mean")},
        dedupe_on=["text"],
    ),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_partitioned_clean_equals_one_pass(tmp_path: Path, config: CleanConfig) -> None:
    frame = _reviews()
    source = tmp_path / "snapshot.parquet"
    frame.to_parquet(source, index=False)

    single = clean_frame(pd.read_parquet(source), config)
    parts = clean_parquet(source, tmp_path / "clean.parquet", config, rows_per_partition=ROWS_PER_PARTITION)

    assert parts.partitions == 14
    assert parts.rows_in == len(frame) == parts.rows_kept + len(parts.quarantine)
    kept = pd.read_parquet(tmp_path / "clean.parquet")
    pd.testing.assert_frame_equal(kept, single.data.reset_index(drop=True), check_dtype=False)
    columns = ["item_id", "step", "reason", "row"]
    pd.testing.assert_frame_equal(parts.quarantine[columns], single.quarantine[columns])
    assert parts.imputed == single.imputed
    assert parts.quarantine["reason"].str.contains("exact duplicate of item r002 on text").any()  # 298 rows apart
    assert set(single.quarantine["step"]) >= ({"missing", "dedupe", "outliers"} if config.outliers else {"dedupe"})


SUITE = {
    "name": "reviews_partitioned",
    "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 100, "max_value": 400}},
        {"type": "expect_column_to_exist", "kwargs": {"column": "text"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "text", "mostly": 0.98}},
        # texts repeated across partitions count against `mostly`: every copy is unexpected
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "text", "mostly": 0.95}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "category", "value_set": ["fresh", "rotten"]},
            "meta": {"row_level": True},
        },
        {
            "type": "expect_column_value_lengths_to_be_between",
            "kwargs": {"column": "text", "min_value": 2},
            "meta": {"row_level": True},
        },
    ],
}


def _outcome_rows(outcome: ValidationOutcome) -> list[tuple[object, ...]]:
    return [(e.type, e.column, e.success, e.unexpected_count, sorted(e.unexpected_ids)) for e in outcome.expectations]


def test_partitioned_validation_equals_one_pass(tmp_path: Path) -> None:
    frame = _reviews()
    frame.loc[[40, 301, 304], "category"] = "fresh"  # one text three times, kept by the row-level gate
    source = tmp_path / "snapshot.parquet"
    frame.to_parquet(source, index=False)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(SUITE))
    where = {"gx_root": tmp_path / "gx", "asset": "reviews", "where": "the snapshot"}

    kept, single = validate_frame(pd.read_parquet(source), suite, **where)  # type: ignore[arg-type]
    parts = validate_parquet(source, tmp_path / "valid.parquet", suite, rows_per_partition=160, **where)  # type: ignore[arg-type]

    for got, want in zip(_outcome_rows(parts), _outcome_rows(single), strict=True):
        assert got == want
    assert parts.success == single.success
    unique = next(e for e in parts.expectations if e.type.endswith("unique"))
    assert "r040" in unique.unexpected_ids and "r301" in unique.unexpected_ids  # copies 260 rows apart
    columns = ["item_id", "step", "reason"]
    pd.testing.assert_frame_equal(parts.quarantine[columns], single.quarantine[columns])
    assert len(parts.quarantine) > 0 and set(parts.quarantine["step"]) == {"expectations:reviews_partitioned"}
    valid = pd.read_parquet(tmp_path / "valid.parquet")
    assert valid["item_id"].tolist() == kept["item_id"].tolist()
    assert len(valid) + len(parts.quarantine) == len(frame)
