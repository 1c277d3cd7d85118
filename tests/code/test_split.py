"""Splits: ratios, stratification, groups and duplicates kept whole, time order, errors, manifest."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tasks.columns import SPLIT
from tasks.partition import check_leakage, split_frame
from tasks.split import (
    SplitConfig,
    assign_folds,
    assign_splits,
    group_rows,
    split_by_config,
    write_split_manifest,
)

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(20)) + f" item{i}" for i in range(n)]


def _typo(text: str, at: int) -> str:
    """Swap two neighbouring letters: the kind of edit a copy-paste picks up."""
    return text[:at] + text[at + 1] + text[at] + text[at + 2 :]


def _frame(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": [f"r{i:05d}" for i in range(n)],
            "text": _texts(n, seed),
            "label": rng.choice(["pos", "neg", "neutral"], p=[0.6, 0.3, 0.1], size=n),
            "user": rng.integers(0, 120, size=n),
        },
        index=pd.RangeIndex(100, 100 + n),  # not 0..n-1: results must follow the index
    )


def _span(times: pd.Series, splits: pd.Series) -> dict[str, dict[str, Any]]:
    """First and last time per split: {"train": {"min": ..., "max": ...}, ...}."""
    agg = times.groupby(splits.to_numpy()).agg(["min", "max"])
    return {str(s): {"min": row["min"], "max": row["max"]} for s, row in agg.iterrows()}


def _straddling(keys: pd.Series, splits: pd.Series) -> int:
    """How many key values appear in more than one split."""
    return int((splits.groupby(keys.to_numpy()).nunique() > 1).sum())


# -- stratified ---------------------------------------------------------------
def test_stratified_split_hits_ratios_and_keeps_label_mix() -> None:
    df = _frame()
    splits = assign_splits(df, strategy="stratified", seed=7, label_col="label", text_col="text")
    assert splits.index.equals(df.index) and splits.name == "split"
    assert set(splits) == {"train", "val", "test"}
    sizes = splits.value_counts()
    assert sizes["train"] == pytest.approx(800, abs=3)
    assert sizes["val"] == pytest.approx(100, abs=3)
    share = pd.crosstab(df["label"], splits, normalize="columns")
    overall = df["label"].value_counts(normalize=True)
    for split in ("train", "val", "test"):
        assert (share[split] - overall).abs().max() < 0.02


def test_same_seed_same_split_other_seed_other_split() -> None:
    df = _frame()
    a = assign_splits(df, strategy="stratified", seed=1, label_col="label")
    b = assign_splits(df.copy(), strategy="stratified", seed=1, label_col="label")
    c = assign_splits(df, strategy="stratified", seed=2, label_col="label")
    assert a.equals(b)
    assert (a != c).sum() > 50


def test_stratified_without_label_is_random_with_exact_sizes() -> None:
    splits = assign_splits(_frame(200), strategy="stratified", seed=0, ratios=(0.5, 0.25, 0.25))
    assert splits.value_counts().to_dict() == {"train": 100, "val": 50, "test": 50}


def test_zero_ratio_split_stays_empty() -> None:
    splits = assign_splits(_frame(300), strategy="stratified", seed=0, ratios=(0.9, 0.1, 0.0), label_col="label")
    assert set(splits) == {"train", "val"}


# -- duplicates and groups ----------------------------------------------------
def test_exact_and_near_duplicates_never_straddle_splits() -> None:
    df = _frame(600)
    rng = random.Random(3)
    copies = []
    for i in range(0, 600, 5):  # 120 planted copies: case, punctuation, spacing, a typo
        text = df["text"].iloc[i]
        variant = rng.choice([text.upper(), text + " !!!", text.replace(" ", ",  ", 3), _typo(text, 40)])
        copies.append({"id": f"c{i}", "text": variant, "label": df["label"].iloc[i], "user": -1, "orig": i})
    extra = pd.DataFrame(copies, index=pd.RangeIndex(5000, 5000 + len(copies)))
    both = pd.concat([df.assign(orig=range(600)), extra])
    splits = assign_splits(both, strategy="stratified", seed=0, label_col="label", text_col="text")
    assert _straddling(both["orig"], splits) == 0
    # A naive split of the same rows leaks (the test can fail).
    naive = pd.Series(np.random.default_rng(0).choice(["train", "val", "test"], len(both)), index=both.index)
    assert _straddling(both["orig"], naive) > 10


def test_group_split_keeps_each_group_in_one_split_and_stratifies() -> None:
    df = _frame(2000)
    splits = assign_splits(df, strategy="group", seed=4, group_col="user", label_col="label")
    assert _straddling(df["user"], splits) == 0
    sizes = splits.value_counts(normalize=True)
    assert sizes["train"] == pytest.approx(0.8, abs=0.03)
    assert sizes["test"] == pytest.approx(0.1, abs=0.03)
    share = pd.crosstab(df["label"], splits, normalize="columns")
    assert (share["test"] - share["train"]).abs().max() < 0.06


def test_duplicates_join_user_groups_transitively() -> None:
    df = pd.DataFrame(
        {
            "user": ["a", "a", "b", "b", "c", "d"],
            "text": ["one two three four", "x", "ONE two three four!", "y", "z", "w"],
        }
    )
    groups = group_rows(df, group_col="user", text_col="text")
    # a and b are joined by the duplicate text; c and d stay alone.
    assert groups.tolist() == [0, 0, 0, 0, 1, 2]


def _reposted() -> pd.DataFrame:
    """Three users' posts; b re-posts a's first text re-cased, c re-posts b's first text with a typo."""
    rng = random.Random(5)
    texts = [" ".join(rng.choice(WORDS) for _ in range(20)) + f" post{i}" for i in range(12)]
    df = pd.DataFrame({"user": ["a"] * 4 + ["b"] * 4 + ["c"] * 4, "text": texts}, index=range(10, 22))
    df.loc[15, "text"] = df.loc[10, "text"].upper()
    df.loc[20, "text"] = _typo(df.loc[14, "text"], 30)
    df.loc[13, "text"] = df.loc[11, "text"] + "!"  # a copy inside one group
    return df


def test_a_copy_in_another_group_is_quarantined_not_merged() -> None:
    df = _reposted()
    config = SplitConfig(strategy="group", group_col="user", text_col="text", ratios=(0.4, 0.3, 0.3))
    result = split_by_config(df, config)
    assert result.copies.to_dict(orient="index") == {
        15: {"original": 10, "kind": "normalised"},
        20: {"original": 14, "kind": "near"},
    }
    assert result.splits.index.tolist() == [i for i in df.index if i not in (15, 20)]
    # The three users stay three groups; the copy inside a's posts still joins its original.
    groups = result.groups.groupby(df["user"]).nunique()
    assert groups.to_dict() == {"a": 1, "b": 1, "c": 1}
    assert result.groups.nunique() == 3
    assert _straddling(df["user"].loc[result.splits.index], result.splits) == 0

    # "merge" joins the users through the copies into one group, which no split can place.
    with pytest.raises(ValueError, match=r"user='a' \(merged by duplicates with 2 more values\) holds 100%"):
        split_by_config(df, config.model_copy(update={"cross_group_duplicates": "merge"}))


def test_copies_of_rows_without_a_group_join_them() -> None:
    df = _reposted()
    df.loc[15, "user"] = None  # no group to cross: the copy joins its original, as before
    result = split_by_config(
        df, SplitConfig(strategy="group", group_col="user", text_col="text", ratios=(0.5, 0.25, 0.25))
    )
    assert result.copies.index.tolist() == [20]
    assert result.groups[15] == result.groups[10]


def test_missing_group_values_are_single_rows() -> None:
    df = pd.DataFrame({"user": [None, None, "a", "a"], "text": ["p", "q", "r", "s"]})
    assert group_rows(df, group_col="user").tolist() == [0, 1, 2, 2]


def test_tabular_and_image_duplicates_are_merged() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 3))
    df = pd.DataFrame(feats, columns=["a", "b", "c"])
    df.loc[39, ["a", "b", "c"]] = df.loc[0, ["a", "b", "c"]].to_numpy() + 1e-9
    groups = group_rows(df, feature_cols=["a", "b", "c"])
    assert groups[0] == groups[39] and groups.nunique() == 39

    from scipy import ndimage

    imgs = [ndimage.gaussian_filter(np.random.default_rng(s).normal(size=(48, 48)), 4) for s in range(6)]
    imgs.append(imgs[2] * 1.05 + 0.01)
    idf = pd.DataFrame({"img": pd.Series(imgs, dtype=object)})
    g = group_rows(idf, image_col="img")
    assert g[2] == g[6] and g.nunique() == 6


def test_embedding_near_duplicates_are_merged() -> None:
    rng = np.random.default_rng(0)
    vecs = [rng.normal(size=8) for _ in range(10)]
    vecs.append(vecs[4] + 1e-3)
    df = pd.DataFrame({"emb": pd.Series(vecs, dtype=object), "text": [f"t{i}" for i in range(11)]})
    g = group_rows(df, text_col="text", near_duplicates="embedding", embedding_col="emb")
    assert g[4] == g[10] and g.nunique() == 10


# -- temporal -----------------------------------------------------------------
def _daily(n: int = 365) -> pd.DataFrame:
    return pd.DataFrame(
        {"day": pd.date_range("2024-01-01", periods=n, freq="D"), "x": np.arange(n)},
        index=np.random.default_rng(0).permutation(n),  # shuffled: order must come from time_col
    )


def test_temporal_split_orders_train_val_test() -> None:
    df = _daily()
    splits = assign_splits(df, strategy="temporal", seed=0, time_col="day")
    span = _span(df["day"], splits)
    assert span["train"]["max"] < span["val"]["min"]
    assert span["val"]["max"] < span["test"]["min"]
    assert splits.value_counts()["train"] == pytest.approx(292, abs=1)


def test_temporal_gap_excludes_rows_before_each_cut() -> None:
    df = _daily()
    splits = assign_splits(df, strategy="temporal", seed=0, time_col="day", gap="7D")
    assert set(splits) == {"train", "val", "test", "gap"}
    assert (splits == "gap").sum() == 14
    span = _span(df["day"], splits)
    assert span["val"]["min"] - span["train"]["max"] > pd.Timedelta("7D")
    assert span["test"]["min"] - span["val"]["max"] > pd.Timedelta("7D")


def test_temporal_ties_stay_together_and_strings_parse() -> None:
    df = pd.DataFrame({"t": ["2024-01-01"] * 5 + ["2024-01-02"] * 5 + ["2024-01-03"] * 5 + ["2024-01-04"] * 5})
    splits = assign_splits(df, strategy="temporal", seed=0, time_col="t", ratios=(0.5, 0.25, 0.25))
    assert _straddling(df["t"], splits) == 0


def test_temporal_keeps_the_earliest_copy_and_drops_later_ones() -> None:
    df = _daily(100).sort_index()
    df["text"] = [f"unique text number {i} " + "w" * (i % 7) for i in range(100)]
    late = df.index[df["day"] == df["day"].max()][0]
    early = df.index[df["day"] == df["day"].min()][0]
    df.loc[late, "text"] = df.loc[early, "text"].upper()
    splits = assign_splits(df, strategy="temporal", seed=0, time_col="day", text_col="text")
    assert splits[early] == "train"
    assert splits[late] == "gap"


def test_temporal_numeric_time_column_with_numeric_gap() -> None:
    df = pd.DataFrame({"year": np.repeat(np.arange(2000, 2020), 10)})
    splits = assign_splits(df, strategy="temporal", seed=0, time_col="year", gap=1)
    span = _span(df["year"], splits)
    assert span["val"]["min"] - span["train"]["max"] > 1


# -- errors that name the fix -------------------------------------------------
def test_missing_column_lists_available_columns() -> None:
    with pytest.raises(ValueError, match=r"group_col='users' is not a column; available columns: \['id', 'text'"):
        assign_splits(_frame(50), strategy="group", seed=0, group_col="users")
    with pytest.raises(ValueError, match="needs time_col"):
        assign_splits(_frame(50), strategy="temporal", seed=0)


def test_dominant_group_is_named_with_its_share() -> None:
    df = pd.DataFrame({"site": ["big"] * 90 + [f"s{i}" for i in range(10)], "y": [0, 1] * 50})
    with pytest.raises(ValueError, match=r"site='big' holds 90% of the rows .*strategy='temporal'"):
        assign_splits(df, strategy="group", seed=0, group_col="site")


def test_unparsable_timestamps_are_shown() -> None:
    df = pd.DataFrame({"t": ["2024-01-01", "yesterday", "2024-01-03", "13/45/2024"]})
    with pytest.raises(ValueError, match=r"2 values .* not timestamps, e.g. \['yesterday', '13/45/2024'\]"):
        assign_splits(df, strategy="temporal", seed=0, time_col="t")


def test_rare_class_is_named_with_its_count() -> None:
    df = _frame(100)
    df.loc[df.index[:2], "label"] = "sarcasm"
    with pytest.raises(ValueError, match=r"'sarcasm' \(2 rows\).*merge rare classes.*label_col=None"):
        assign_splits(df, strategy="stratified", seed=0, label_col="label")


@pytest.mark.parametrize("ratios", [(0.8, 0.1), (0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_ratios(ratios: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="summing to 1"):
        assign_splits(_frame(50), strategy="stratified", seed=0, ratios=ratios)  # type: ignore[arg-type]


def test_bad_gap_and_empty_frame() -> None:
    with pytest.raises(ValueError, match="Timedelta"):
        assign_splits(_daily(), strategy="temporal", seed=0, time_col="day", gap="a week")
    with pytest.raises(ValueError, match="no rows"):
        assign_splits(_frame(0), strategy="stratified", seed=0)


# -- folds ---------------------------------------------------------------------
def test_folds_keep_groups_and_duplicates_whole_and_stratify() -> None:
    df = _frame(1500)
    df.loc[df.index[1], "text"] = df["text"].iloc[0].upper()  # users differ, text is a copy
    folds = assign_folds(df, k=5, seed=3, group_col="user", label_col="label", text_col="text")
    assert folds.name == "fold" and sorted(folds.unique()) == [0, 1, 2, 3, 4]
    assert _straddling(df["user"], folds) == 0
    assert folds.iloc[0] == folds.iloc[1]
    sizes = folds.value_counts(normalize=True)
    assert sizes.max() - sizes.min() < 0.05
    share = pd.crosstab(df["label"], folds, normalize="columns")
    assert (share.max(axis=1) - share.min(axis=1)).max() < 0.08


def test_too_few_rows_for_folds() -> None:
    with pytest.raises(ValueError, match="k >= 2"):
        assign_folds(_frame(20), k=1, seed=0)
    with pytest.raises(ValueError, match=r"g='a' holds 50% of the rows"):
        assign_folds(pd.DataFrame({"g": ["a", "a", "b", "b"]}), k=3, seed=0, group_col="g")
    with pytest.raises(ValueError, match="'fold 4' got no rows"):
        assign_folds(pd.DataFrame({"g": ["a", "b", "c", "d"]}), k=5, seed=0, group_col="g")


# -- config -------------------------------------------------------------------
def test_split_by_config_returns_splits_folds_and_groups() -> None:
    df = _frame(800)
    df.loc[df.index[5], "text"] = df["text"].iloc[4] + "!"
    config = SplitConfig(
        strategy="group", group_col="user", label_col="label", text_col="text", folds=4, cross_group_duplicates="merge"
    )
    result = split_by_config(df, config)
    assert result.splits.equals(
        assign_splits(df, strategy="group", seed=42, group_col="user", label_col="label", text_col="text")
    )
    assert result.folds is not None
    train = result.splits == "train"
    assert set(result.folds[train]) == {0, 1, 2, 3} and set(result.folds[~train]) == {-1}
    assert _straddling(df["user"][train], result.folds[train]) == 0
    assert result.groups.iloc[4] == result.groups.iloc[5]
    assert result.merged_rows >= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratios": (0.7, 0.1, 0.1)}, "summing to 1"),
        ({"folds": 1}, "folds=1"),
        ({"strategy": "temporal", "time_col": "t", "folds": 3}, "break time order"),
        ({"near_duplicates": "embedding"}, "embedding_col"),
        ({"strategy": "group"}, "needs group_col"),
        ({"near_duplicate_threshold": 0}, "greater than 0"),
        ({"cross_group_duplicates": "drop"}, "'quarantine' or 'merge'"),
        ({"max_label_shift": 1.5}, "less than or equal to 1"),
        ({"unknown": 1}, "Extra inputs"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SplitConfig(**kwargs)


# -- manifest -----------------------------------------------------------------
def test_manifest_is_sorted_and_byte_identical(tmp_path: Path) -> None:
    df = _frame(500)
    splits = assign_splits(df, strategy="stratified", seed=0, label_col="label")
    folds = assign_folds(df, k=3, seed=0)
    shuffled = df.sample(frac=1.0, random_state=1)
    a = write_split_manifest(df["id"], splits, folds, tmp_path / "a" / "splits.parquet")
    b = write_split_manifest(shuffled["id"], splits[shuffled.index], folds[shuffled.index], tmp_path / "b.parquet")
    assert a == b
    assert (tmp_path / "a" / "splits.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert a == hashlib.sha256((tmp_path / "b.parquet").read_bytes()).hexdigest()
    table = pq.read_table(tmp_path / "b.parquet").to_pandas()
    assert list(table.columns) == ["item_id", "split", "fold"]
    assert table["item_id"].is_monotonic_increasing
    lookup = pd.Series(splits.to_numpy(), index=df["id"].to_numpy())
    assert (table["split"].to_numpy() == lookup[table["item_id"]].to_numpy()).all()
    # Another split gives another hash.
    other = assign_splits(df, strategy="stratified", seed=1, label_col="label")
    assert write_split_manifest(df["id"], other, None, tmp_path / "c.parquet") != a


def test_manifest_rejects_duplicate_ids_and_misaligned_inputs(tmp_path: Path) -> None:
    ids = pd.Series(["a", "b", "a"])
    splits = pd.Series(["train", "val", "test"])
    with pytest.raises(ValueError, match=r"unique.*\['a'\]"):
        write_split_manifest(ids, splits, None, tmp_path / "m.parquet")
    with pytest.raises(ValueError, match="share one index"):
        write_split_manifest(pd.Series(["a", "b", "c"]), splits.iloc[:2], None, tmp_path / "m.parquet")
    with pytest.raises(ValueError, match="unknown values"):
        write_split_manifest(pd.Series(["a", "b", "c"]), pd.Series(["train", "dev", "test"]), None, tmp_path / "m")


def test_split_by_config_names_a_missing_time_column() -> None:
    from tasks.split import SplitConfig, split_by_config

    df = pd.DataFrame({"item_id": [str(i) for i in range(40)], "text": [f"t {i}" for i in range(40)]})
    with pytest.raises(ValueError, match=r"time_col='when' is not a column; available columns"):
        split_by_config(df, SplitConfig(strategy="temporal", time_col="when"))


# -- the split stage as the pipeline runs it -------------------------------------
def test_split_frame_quarantines_copies_naming_the_original_and_its_group(tmp_path: Path) -> None:
    df = _reposted().reset_index(drop=True)
    df.insert(0, "item_id", [f"post-{i}" for i in range(len(df))])
    settings = SplitConfig(strategy="group", group_col="user", text_col="text", ratios=(0.4, 0.3, 0.3))
    outcome = split_frame(df, settings, manifest_root=tmp_path)
    reasons = outcome.quarantine.set_index("item_id")["reason"]
    assert reasons.index.tolist() == ["post-5", "post-10"]
    assert reasons["post-5"].startswith("normalised duplicate of item post-0 (user='a'), which is kept")
    assert "this copy under user='b' would join the two groups" in reasons["post-5"]
    assert reasons["post-10"].startswith("near duplicate of item post-4 (user='b')")
    assert (outcome.quarantine["step"] == "split").all()
    assert sum(outcome.sizes().values()) + len(outcome.quarantine) == len(df)
    assert set(pq.read_table(outcome.manifest_path).column("item_id").to_pylist()) == set(outcome.data["item_id"])
    report = check_leakage(outcome)
    assert report.passed, report.to_markdown()
    listed = report.check("cross_group_duplicates")
    assert listed.details["quarantined"] == 2
    assert [c["item_id"] for c in listed.details["copies"]] == ["post-5", "post-10"]
    assert "post-0" in report.to_markdown()


def test_split_frame_keeps_temporal_gap_rows_apart_and_accounts_for_them(tmp_path: Path) -> None:
    df = _daily(120).sort_index()
    df.insert(0, "item_id", [f"day-{i}" for i in range(len(df))])
    settings = SplitConfig(strategy="temporal", time_col="day", gap="3D")
    outcome = split_frame(df, settings, manifest_root=tmp_path)
    gap = outcome.gap_rows()
    assert len(gap) == 6 and set(gap[SPLIT]) == {"gap"}
    assert sum(outcome.sizes().values()) + len(gap) == len(df)
    assert "gap" not in outcome.sizes()
    assert all(len(frame) and "gap" not in set(frame[SPLIT]) for frame in outcome.frames().values())
