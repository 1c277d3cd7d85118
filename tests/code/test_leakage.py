"""Leakage report: each planted leak is caught, a clean split passes, and the report renders."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from tasks.leakage import LeakageError, leakage_report
from tasks.split import assign_splits

WORDS = "red green blue cyan magenta yellow black white orange purple brown pink grey olive navy teal".split()


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "text": [" ".join(rng.choice(WORDS) for _ in range(20)) + f" n{i}" for i in range(n)],
            "user": nrng.integers(0, 60, size=n),
            "label": nrng.choice(["a", "b"], size=n),
            "day": pd.date_range("2024-01-01", periods=n, freq="D"),
            "score": nrng.normal(size=n).round(1),
        }
    )


def _clean_split(df: pd.DataFrame) -> pd.Series:
    return assign_splits(df, strategy="group", seed=0, group_col="user", label_col="label", text_col="text")


def test_clean_group_split_passes_every_hard_check() -> None:
    df = _frame()
    report = leakage_report(df, _clean_split(df), text_col="text", group_col="user", label_col="label")
    assert report.passed, report.to_markdown()
    assert {c.name for c in report.checks} >= {"exact_duplicates", "near_duplicates", "group_overlap"}
    assert report.check("temporal_overlap").skipped
    assert sum(report.split_sizes.values()) == len(df)


def test_exact_duplicate_across_splits_fails_and_names_rows() -> None:
    df = _frame()
    splits = _clean_split(df)
    train_row = splits.index[splits == "train"][0]
    test_row = splits.index[splits == "test"][0]
    df.loc[test_row, "text"] = df.loc[train_row, "text"].upper() + "."
    report = leakage_report(df, splits, text_col="text")
    check = report.check("exact_duplicates")
    assert not check.passed and not report.passed
    assert check.details["clusters_across_splits"] == 1
    assert check.examples[0]["rows"]["train"] == [train_row]
    assert check.examples[0]["rows"]["test"] == [test_row]
    # A copy is not reported twice as a near duplicate.
    assert report.check("near_duplicates").passed


def test_near_duplicate_across_splits_fails_with_its_similarity() -> None:
    df = _frame()
    splits = _clean_split(df)
    train_row = splits.index[splits == "train"][3]
    val_row = splits.index[splits == "val"][0]
    text = df.loc[train_row, "text"]
    df.loc[val_row, "text"] = text[:30] + text[31] + text[30] + text[32:] + " indeed"
    report = leakage_report(df, splits, text_col="text", near_threshold=0.8)
    check = report.check("near_duplicates")
    assert not check.passed
    assert check.details["pairs_across_splits"] == 1
    pair = check.examples[0]
    assert {pair["a"]["row"], pair["b"]["row"]} == {train_row, val_row}
    assert 0.8 <= pair["jaccard"] < 1.0


def test_group_overlap_fails_on_a_naive_split() -> None:
    df = _frame()
    naive = pd.Series(np.random.default_rng(1).choice(["train", "val", "test"], len(df)), index=df.index)
    check = leakage_report(df, naive, group_col="user").check("group_overlap")
    assert not check.passed
    assert check.details["groups_in_several_splits"] > 30
    assert sum(check.examples[0]["rows"].values()) > 1


def test_temporal_overlap_fails_unless_ordered() -> None:
    df = _frame()
    ordered = assign_splits(df, strategy="temporal", seed=0, time_col="day")
    assert leakage_report(df, ordered, time_col="day").passed
    shuffled = pd.Series(ordered.sample(frac=1.0, random_state=0).to_numpy(), index=df.index)
    check = leakage_report(df, shuffled, time_col="day").check("temporal_overlap")
    assert not check.passed
    assert check.examples[0]["earlier"] == "train" and check.examples[0]["later"] == "val"


def test_gap_rows_are_ignored() -> None:
    df = _frame()
    splits = assign_splits(df, strategy="temporal", seed=0, time_col="day", gap="5D")
    df.loc[splits.index[splits == "gap"][0], "text"] = df["text"].iloc[0]  # a copy inside the gap
    report = leakage_report(df, splits, text_col="text", time_col="day")
    assert report.passed
    assert sum(report.split_sizes.values()) == len(df) - 10


def test_label_distribution_table_and_soft_warning() -> None:
    df = _frame()
    splits = pd.Series(np.where(np.arange(len(df)) < 320, "train", "test"), index=df.index)
    splits[(splits == "test") & (df["label"] == "a")] = "val"  # val all "a", test all "b"
    report = leakage_report(df, splits, label_col="label")
    check = report.check("label_distribution")
    assert report.passed  # soft checks do not fail the report
    assert not check.passed and "val lacks labels present in train: ['b']" in check.summary
    assert report.label_table is not None
    assert report.label_table.loc["val", "b"] == 0
    assert report.label_table.to_numpy().sum() == len(df)
    assert report.warnings == [check, report.check("label_shift")]


def _drifting(n: int = 400) -> pd.DataFrame:
    """Labels that drift over time: early days mostly "a", the last days only "b"."""
    df = _frame(n)
    share_b = np.linspace(0.1, 1.2, n).clip(max=1.0)
    df["label"] = np.where(np.random.default_rng(3).random(n) < share_b, "b", "a")
    return df


def test_a_split_that_cannot_measure_anything_is_said_loudly_with_the_numbers() -> None:
    df = _drifting()
    splits = assign_splits(df, strategy="temporal", seed=0, time_col="day")
    report = leakage_report(df, splits, time_col="day", label_col="label")
    shift = report.check("label_shift")
    assert report.passed and shift.severity == "soft" and not shift.passed  # a warning without the gate
    assert "test holds a single class: 'b' (40 of 40 rows)" in shift.summary
    tvd = shift.details["total_variation_from_train"]["test"]
    assert tvd > 0.4 and f"test label mix differs from train's by TVD {tvd:.2f} > 0.10" in shift.summary
    assert "(test: a 0%, b 100%; train: a " in shift.summary
    markdown = report.to_markdown()
    assert markdown.splitlines()[2].startswith("> **WARNING: these splits cannot measure the model.**")

    gated = leakage_report(df, splits, time_col="day", label_col="label", max_label_shift=0.3)
    assert not gated.passed and gated.check("label_shift").severity == "hard"
    with pytest.raises(LeakageError, match=r"label_shift: .*single class.* Fix: use split.strategy: stratified"):
        gated.raise_if_failed()
    # A stratified split of the same rows keeps the mix: nothing to flag, the gate passes.
    mixed = assign_splits(df, strategy="stratified", seed=0, label_col="label")
    assert leakage_report(df, mixed, label_col="label", max_label_shift=0.05).passed


def test_time_overlap_is_information_for_a_split_that_is_not_temporal() -> None:
    df = _frame()
    splits = _clean_split(df)
    check = leakage_report(df, splits, time_col="day", time_ordered=False).check("temporal_overlap")
    assert check.passed and check.severity == "info"
    assert check.summary.startswith("information only (the split is not temporal): max(train)")
    assert not leakage_report(df, splits, time_col="day").check("temporal_overlap").passed


def test_near_duplicate_threshold_is_the_splits_own() -> None:
    df = _frame()
    splits = _clean_split(df)
    train_row, val_row = splits.index[splits == "train"][3], splits.index[splits == "val"][0]
    words = df.loc[train_row, "text"].split()
    df.loc[val_row, "text"] = " ".join(words[:15] + ["different", "words", "here"] + words[18:])
    assert not leakage_report(df, splits, text_col="text", near_threshold=0.5).check("near_duplicates").passed
    assert leakage_report(df, splits, text_col="text", near_threshold=0.9).check("near_duplicates").passed
    assert leakage_report(df, splits, text_col="text", near_threshold=None).check("near_duplicates").skipped


def test_identifier_column_that_encodes_the_label_is_flagged() -> None:
    df = _frame()
    df["file"] = [f"data/{y}/img_{i:04d}.png" for i, y in enumerate(df["label"])]  # label in the path
    df["row_id"] = np.arange(len(df))  # an id that carries no label
    splits = _clean_split(df)
    check = leakage_report(df, splits, label_col="label").check("identifier_columns")
    assert not check.passed
    assert [f["column"] for f in check.examples] == ["file"]
    assert check.examples[0]["lookup"] == "token"
    assert "row_id" in check.details["tested"]
    assert "score" not in check.details["tested"]  # few distinct values, plain name: a feature


def test_group_id_that_predicts_label_on_random_split_is_flagged() -> None:
    df = _frame(600).rename(columns={"user": "user_id"})  # 60 values: an id by name, not by count
    df["label"] = np.where(df["user_id"] % 2 == 0, "a", "b")  # each user has one label
    naive = pd.Series(np.random.default_rng(99).choice(["train", "val", "test"], len(df)), index=df.index)
    flagged = leakage_report(df, naive, label_col="label").check("identifier_columns")
    assert [f["column"] for f in flagged.examples] == ["user_id"]
    assert flagged.examples[0]["balanced_accuracy"] > 0.95  # users unseen in train fall back
    # With users kept apart, the lookup has nothing to look up.
    grouped = assign_splits(df, strategy="group", seed=0, group_col="user_id")
    assert leakage_report(df, grouped, label_col="label").check("identifier_columns").passed


def test_group_col_is_always_tested_as_an_identifier() -> None:
    df = _frame(600)
    df["label"] = np.where(df["user"] % 2 == 0, "a", "b")
    naive = pd.Series(np.random.default_rng(99).choice(["train", "val", "test"], len(df)), index=df.index)
    assert leakage_report(df, naive, label_col="label").check("identifier_columns").passed
    check = leakage_report(df, naive, label_col="label", group_col="user").check("identifier_columns")
    assert [f["column"] for f in check.examples] == ["user"]


def test_report_renders_and_raises() -> None:
    df = _frame()
    naive = pd.Series(np.random.default_rng(1).choice(["train", "val", "test"], len(df)), index=df.index)
    report = leakage_report(df, naive, text_col="text", group_col="user", label_col="label", time_col="day")
    markdown = report.to_markdown()
    assert markdown.startswith("# Leakage report: FAILED")
    assert "| group_overlap | hard | FAIL |" in markdown
    assert "## Label distribution" in markdown
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is False
    assert {c["name"] for c in data["checks"] if not c["passed"]} >= {"group_overlap", "temporal_overlap"}
    with pytest.raises(LeakageError, match="group_overlap") as err:
        report.raise_if_failed()
    assert err.value.report is report
    assert isinstance(err.value, RuntimeError)


def test_bad_inputs_are_named() -> None:
    df = _frame(20)
    with pytest.raises(ValueError, match=r"text_col='body' is not a column; available columns"):
        leakage_report(df, pd.Series("train", index=df.index), text_col="body")
    with pytest.raises(ValueError, match="frame's index"):
        leakage_report(df, pd.Series("train", index=range(5)))
