"""The split stage in a real pipeline run: re-posts under other movies quarantined, temporal gap rows accounted for."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from sluice.cli import format_summary
from sluice.home import Home
from tasks.columns import SPLIT
from tasks.leakage import LeakageError

pytestmark = pytest.mark.usefixtures("prefect_server")


def _reviews_with_reposts(path: Path) -> list[str]:
    """600 real snippets posted ten a day, then 20 re-posted (re-cased) under another movie; returns their texts."""
    from tasks.demo_data import rotten_tomatoes_frame

    df = rotten_tomatoes_frame(600)
    df = df[df["category"] != "plot"].reset_index(drop=True)
    movies = sorted(df["movie_name"].unique())
    reposts = df.iloc[::29].head(20).copy()
    reposts["text"] = reposts["text"].str.upper()
    reposts["movie_name"] = [movies[(movies.index(m) + 1) % len(movies)] for m in reposts["movie_name"]]
    both = pd.concat([df, reposts], ignore_index=True)
    both["posted"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(both.index // 10, unit="D")
    both.to_csv(path, index=False)
    return reposts["text"].tolist()


def test_temporal_run_accounts_for_gap_rows_and_quarantines_cross_movie_reposts(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, tmp_path: Path
) -> None:
    from flows.pipeline import pipeline

    data = tmp_path / "reviews.csv"
    reposted = _reviews_with_reposts(data)
    config = make_config(
        source__path=str(data),
        demo=None,
        columns__time="posted",
        split__strategy="temporal",
        split__gap="2D",
        train__epochs=2,
        registry__model_name="rt-split-account",
        registry__promotion={"floors": {"accuracy": 0.0}},
    )
    result = pipeline(config_path=str(config), home=str(home.root))

    rows = result["rows"]
    assert rows["rows_in"] == len(pd.read_csv(data))
    assert rows["gap"] > 0
    assert rows["rows_in"] == rows["trainable"] + rows["awaiting"] + rows["quarantined_total"] + rows["gap"]
    assert sum(result["split_sizes"].values()) == rows["trainable"]

    # The re-posts left the split as copies, each naming the kept first occurrence and its movie.
    quarantine = pd.read_parquet(result["quarantine_path"])
    copies = quarantine[quarantine["step"] == "split"]
    assert rows["quarantined"]["split"] == len(copies) == len(reposted)
    assert sorted(json.loads(r)["text"] for r in copies["row"]) == sorted(reposted)
    assert copies["reason"].str.match(r"normalised duplicate of item \w+ \(movie_name='.+'\), which is kept").all()

    # Gap rows are neither trained on nor lost: their own file under the home, and a line in the summary.
    gap = pd.read_parquet(result["gap_path"])
    assert len(gap) == rows["gap"] and set(gap[SPLIT]) == {"gap"}
    assert Path(result["gap_path"]).is_relative_to(home.root)
    assert f"gap: {rows['gap']} rows between the temporal splits" in format_summary(result, prefect_url=None)

    leakage = json.loads((Path(result["run_dir"]) / "reports" / "leakage_report.json").read_text())
    checks = {c["name"]: c for c in leakage["checks"]}
    assert checks["temporal_overlap"]["severity"] == "hard" and checks["temporal_overlap"]["passed"]
    assert checks["cross_group_duplicates"]["details"]["quarantined"] == len(reposted)

    # split.max_label_shift turns the label-shift warning into the leakage gate (exit status 2 in the CLI).
    shift = checks["label_shift"]["details"]["total_variation_from_train"]
    assert checks["label_shift"]["severity"] == "soft" and max(shift.values()) > 0.01
    gated = make_config(
        source__path=str(data),
        demo=None,
        columns__time="posted",
        split__strategy="temporal",
        split__gap="2D",
        split__max_label_shift=0.01,
        registry__model_name="rt-split-account",
    )
    with pytest.raises(LeakageError, match=r"label_shift: .*label mix differs from train's by TVD"):
        pipeline(config_path=str(gated), home=str(home.root))
