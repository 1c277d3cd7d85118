"""Sticky splits: items keep their split as data grows, new items restore the ratios, the holdout stays frozen."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.columns import SPLIT
from tasks.partition import SplitOutcome, check_leakage, commit_assignment, load_assignment, split_frame
from tasks.split import SplitConfig

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
GROUPED = SplitConfig(strategy="group", group_col="movie", text_col="text", label_col="label", seed=7)


def _reviews(start: int, stop: int, per_movie: int = 5, seed: int = 0) -> pd.DataFrame:
    """Reviews `start`..`stop-1`: distinct texts, `per_movie` a movie, labels at random (seeded per row)."""
    rows = range(start, stop)
    rngs = [random.Random(seed * 100_003 + i) for i in rows]
    return pd.DataFrame(
        {
            "item_id": [f"r{i:05d}" for i in rows],
            "text": [
                " ".join(rng.choice(WORDS) for _ in range(20)) + f" r{i}" for rng, i in zip(rngs, rows, strict=True)
            ],
            "movie": [f"m{i // per_movie}" for i in rows],
            "label": [random.Random(i).choice(["fresh", "rotten"]) for i in rows],
        }
    )


def _run(df: pd.DataFrame, root: Path, settings: SplitConfig = GROUPED, **kwargs: object) -> SplitOutcome:
    outcome = split_frame(df, settings, manifest_root=root, dataset="rt", **kwargs)  # type: ignore[arg-type]
    commit_assignment(outcome)
    return outcome


def _splits(outcome: SplitOutcome) -> pd.Series:
    return outcome.data.set_index("item_id")[SPLIT]


def test_items_keep_their_split_and_new_groups_restore_the_ratios(tmp_path: Path) -> None:
    first = _splits(_run(_reviews(0, 400), tmp_path))
    grown = _run(_reviews(0, 1000), tmp_path)
    second = _splits(grown)
    assert (second[first.index] == first).all()  # every earlier item kept its split
    shares = second.value_counts(normalize=True)
    for name, ratio in zip(("train", "val", "test"), GROUPED.ratios, strict=True):
        assert shares[name] == pytest.approx(ratio, abs=0.02)
    assert grown.carried == 400 and "400 rows kept their split, 600 new rows" in grown.describe_assignment()
    movies = _reviews(0, 1000).set_index("item_id")["movie"]
    assert (second.groupby(movies[second.index].to_numpy()).nunique() == 1).all()  # groups stay whole


def test_a_fresh_split_of_the_grown_data_would_move_items(tmp_path: Path) -> None:
    # What sticky splits prevent: the same settings on the grown data, without the assignment, move items.
    first = _splits(_run(_reviews(0, 400), tmp_path / "a"))
    fresh = _splits(split_frame(_reviews(0, 1000), GROUPED, manifest_root=tmp_path / "b"))
    assert (fresh[first.index] != first).sum() > 20


def test_new_rows_of_an_assigned_group_and_duplicates_of_assigned_items_follow_them(tmp_path: Path) -> None:
    base = _reviews(0, 400)
    first = _splits(_run(base, tmp_path))
    test_item = first[first == "test"].index[0]
    test_movie = base.set_index("item_id").loc[test_item, "movie"]
    newcomers = pd.DataFrame(
        {
            "item_id": ["late-review", "near-copy"],
            "text": [
                "a review of a tested movie, written later",
                base.set_index("item_id").loc[test_item, "text"] + "!",
            ],
            "movie": [test_movie, None],  # the copy has no movie: a duplicate joins its original's group
            "label": ["fresh", "rotten"],
        }
    )
    second = _splits(_run(pd.concat([base, newcomers], ignore_index=True), tmp_path))
    assert second["late-review"] == "test" and second["near-copy"] == "test"


def test_a_new_row_joining_two_earlier_splits_is_quarantined_and_nothing_moves(tmp_path: Path) -> None:
    settings = GROUPED.model_copy(update={"cross_group_duplicates": "merge"})
    base = _reviews(0, 400)
    first = _splits(_run(base, tmp_path, settings))
    by_id = base.set_index("item_id")
    train_item, test_item = first[first == "train"].index[0], first[first == "test"].index[0]
    bridge = pd.DataFrame(
        {
            "item_id": ["bridge"],
            "text": [by_id.loc[test_item, "text"]],  # a copy of a test review ...
            "movie": [by_id.loc[train_item, "movie"]],  # ... under a movie in train
            "label": ["fresh"],
        }
    )
    outcome = _run(pd.concat([base, bridge], ignore_index=True), tmp_path, settings)
    assert (_splits(outcome)[first.index] == first).all()
    (reason,) = outcome.quarantine.loc[outcome.quarantine["item_id"] == "bridge", "reason"]
    assert reason.startswith("joins items an earlier run put in different splits (train, test")
    assert check_leakage(outcome).passed


def test_assignment_is_byte_stable_and_the_pointer_names_it(tmp_path: Path) -> None:
    _run(_reviews(0, 300), tmp_path / "a")
    _run(_reviews(0, 300), tmp_path / "b")  # another home, the same split
    a, b = load_assignment(tmp_path / "a", "rt"), load_assignment(tmp_path / "b", "rt")
    assert a is not None and b is not None
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.digest == hashlib.sha256(a.path.read_bytes()).hexdigest()
    pointer = json.loads((tmp_path / "a" / "current" / "rt.json").read_text())
    assert pointer["assignment"] == a.digest and pointer["parent"] is None and pointer["strategy"] == "group"
    _run(_reviews(0, 500), tmp_path / "a")
    grown = load_assignment(tmp_path / "a", "rt")
    assert grown is not None and grown.parent == a.digest and len(grown.splits) == 500


def test_an_item_that_left_keeps_its_split_when_it_comes_back(tmp_path: Path) -> None:
    first = _splits(_run(_reviews(0, 400), tmp_path))
    _run(_reviews(0, 400).iloc[50:], tmp_path)  # 50 items left the snapshot (quarantined upstream, say)
    back = _splits(_run(_reviews(0, 600), tmp_path))
    assert (back[first.index] == first).all()


def test_reshuffle_draws_afresh_and_says_so(tmp_path: Path) -> None:
    first = _splits(_run(_reviews(0, 600), tmp_path))
    again = _run(_reviews(0, 600), tmp_path, GROUPED.model_copy(update={"reshuffle": True, "seed": 99}))
    assert again.reshuffled and again.describe_assignment().startswith("RESHUFFLED (split.reshuffle: true)")
    assert (_splits(again)[first.index] != first).sum() > 20
    assert load_assignment(tmp_path, "rt").parent is None  # type: ignore[union-attr]


def test_a_holdout_fraction_is_frozen_at_the_first_split(tmp_path: Path) -> None:
    settings = GROUPED.model_copy(update={"holdout": 0.1})
    first = _run(_reviews(0, 500), tmp_path, settings)
    frozen = set(first.holdout_rows()["item_id"])
    assert len(frozen) == pytest.approx(50, abs=10)  # whole movies of 5
    grown = _run(_reviews(0, 1000), tmp_path, settings)
    assert set(grown.holdout_rows()["item_id"]) == frozen  # new movies never enter it
    reshuffled = _run(_reviews(0, 1000), tmp_path, settings.model_copy(update={"reshuffle": True, "seed": 5}))
    assert set(reshuffled.holdout_rows()["item_id"]) == frozen  # nor does a reshuffle move it
    assert grown.sizes()["holdout"] == len(frozen)


def test_a_holdout_file_takes_its_items_and_their_groups(tmp_path: Path) -> None:
    listed = {"r00000", "r00012"}  # movies m0 and m2
    outcome = _run(_reviews(0, 300), tmp_path, GROUPED.model_copy(update={"holdout": "ids.csv"}), holdout_ids=listed)
    holdout = outcome.holdout_rows()
    assert set(holdout["movie"]) == {"m0", "m2"} and len(holdout) == 10
    assert not (set(holdout["item_id"]) & set(outcome.frames()["train"]["item_id"]))


def test_a_holdout_of_items_already_trained_on_is_refused(tmp_path: Path) -> None:
    first = _splits(_run(_reviews(0, 300), tmp_path))
    trained = first[first == "train"].index[0]
    with pytest.raises(ValueError, match=rf"holdout file ids.csv were already assigned.*{trained} \(train\)"):
        split_frame(
            _reviews(0, 300),
            GROUPED.model_copy(update={"holdout": "ids.csv"}),
            manifest_root=tmp_path,
            dataset="rt",
            holdout_ids={trained},
        )
    with pytest.raises(ValueError, match="a holdout is frozen at the first split"):
        split_frame(_reviews(0, 300), GROUPED.model_copy(update={"holdout": 0.1}), manifest_root=tmp_path, dataset="rt")


def test_another_strategy_needs_a_reshuffle(tmp_path: Path) -> None:
    _run(_reviews(0, 300), tmp_path)
    with pytest.raises(ValueError, match=r"made with 'group'; set split.reshuffle: true"):
        split_frame(
            _reviews(0, 300),
            GROUPED.model_copy(update={"strategy": "stratified"}),
            manifest_root=tmp_path,
            dataset="rt",
        )


def test_items_assigned_apart_that_became_one_group_are_named(tmp_path: Path) -> None:
    first = _splits(_run(_reviews(0, 300), tmp_path))
    regrouped = _reviews(0, 300).assign(movie="all-one-movie")  # the group column changed meaning
    regrouped.loc[regrouped["item_id"].isin(first[first == "test"].index), "movie"] = "m-test"
    with pytest.raises(ValueError, match=r"were put in different splits by an earlier run but are one group now"):
        split_frame(regrouped, GROUPED, manifest_root=tmp_path, dataset="rt")


def test_temporal_cuts_are_frozen_and_later_rows_go_to_test(tmp_path: Path) -> None:
    def days(n: int) -> pd.DataFrame:
        when = pd.date_range("2024-01-01", periods=n, freq="D")
        rng = np.random.default_rng(0)
        return pd.DataFrame({"item_id": [f"d{i}" for i in range(n)], "day": when, "label": rng.choice(["a", "b"], n)})

    settings = SplitConfig(strategy="temporal", time_col="day", label_col="label", gap="2D")
    first = _run(days(200), tmp_path, settings)
    grown = _run(days(300), tmp_path, settings)
    before, after = _splits(first), _splits(grown)
    assert (after[before.index] == before).all()
    assert set(after[~after.index.isin(before.index)]) == {"test"}  # the 100 new, later days
    assert grown.cuts == first.cuts
    assert check_leakage(grown).passed
