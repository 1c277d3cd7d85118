"""Bad input through the whole pipeline flow and through `sluice run`, against the real Prefect and MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from sluice.home import Home
from tasks.columns import ITEM_ID, LABEL, SPLIT

pytestmark = pytest.mark.usefixtures("prefect_server")
SLUICE = str(Path(sys.executable).with_name("sluice"))
GOOD = ["gorgeous", "moving", "sharp", "funny", "tender", "bold"]
BAD = ["dull", "lifeless", "tedious", "clumsy", "flat", "shrill"]


def _config(tmp_path: Path, source: dict[str, object], model_name: str) -> Path:
    raw = {
        "name": "bad-input",
        "source": source,
        "columns": {"text": "text"},
        "clean": {"normalize_text": ["text"], "dedupe_on": ["text"]},
        "labels": {"source": "column", "column": "label", "classes": ["fresh", "rotten"]},
        "split": {"strategy": "stratified", "ratios": [0.7, 0.15, 0.15], "seed": 0},
        "train": {"task": "text", "architecture": "hashed_bag", "epochs": 2, "batch_size": 32, "n_buckets": 4096},
        "registry": {"model_name": model_name, "promotion": {"floors": {}}},
    }
    path = tmp_path / f"{model_name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _reviews(n: int) -> pd.DataFrame:
    """Reviews whose own columns are named like sluice's: item_id, label, split, fold, source_file, source_row."""
    rows = []
    for i in range(n):
        fresh = i % 2 == 0
        words = GOOD if fresh else BAD
        rows.append(
            {
                "item_id": 1000 + i,
                "text": f"review {i}: {words[i % 6]} and {words[(i // 2) % 6]}, {words[(i // 3) % 6]} overall",
                "label": "fresh" if fresh else "rotten",
                "split": "holdout" if i % 5 == 0 else "train",  # the exporter's own split, not sluice's
                "fold": i % 4,
                "source_file": f"export-{i % 3}.csv",
                "source_row": 7 * i,
            }
        )
    return pd.DataFrame(rows)


def test_pipeline_keeps_columns_named_like_sluices_and_accounts_for_planted_rows(
    tmp_path: Path, mlflow_store: str
) -> None:
    from flows.pipeline import pipeline

    reviews = _reviews(240)

    def planted(item_id: int, text: str, label: object, split: str = "x") -> dict[str, object]:
        own = {"split": split, "fold": 0, "source_file": "y", "source_row": 0}
        return {"item_id": item_id, "text": text, "label": label, **own}

    bad_rows = [planted(1003, "a re-export under a used id", "fresh"), planted(2000, "an unknown label", "meh")]
    (tmp_path / "raw").mkdir()
    pd.concat([reviews, pd.DataFrame(bad_rows)]).to_csv(tmp_path / "raw" / "reviews.csv", index=False)
    with (tmp_path / "raw" / "reviews.csv").open("a") as handle:
        handle.write("a malformed line\n")
    # A second export as JSONL whose labels mix integers and strings, reusing an id of the first file.
    more = [
        planted(3000, "a label given as a number", 1),
        planted(3001, "a plain rotten review", "rotten", split="late") | {"source_file": "z", "source_row": 1},
        planted(1005, "an id the CSV already used", "rotten"),
    ]
    (tmp_path / "raw" / "update.jsonl").write_text("".join(json.dumps(r) + "\n" for r in more))
    home = Home.resolve(tmp_path / "home")

    config = _config(tmp_path, {"path": str(tmp_path / "raw")}, "bad-input-names")
    result = pipeline(config_path=str(config), home=str(home.root))

    rows = result["rows"]
    assert rows["rows_in"] == 246 == rows["trainable"] + rows["awaiting"] + rows["quarantined_total"]
    assert rows["trainable"] == 241 and rows["quarantined"] == {"ingest": 3, "labels": 2}
    reasons = pd.read_parquet(result["quarantine_path"]).set_index(ITEM_ID)["reason"]
    assert reasons["1003"].startswith('repeated id "1003" in column "item_id"')
    assert "first seen in reviews.csv data row 4" in reasons["1003"]
    assert "first seen in reviews.csv data row 6" in reasons["1005"]
    assert reasons["2000"].startswith('label "meh" (column label) is not one of the classes fresh, rotten')
    assert reasons["3000"].startswith('label "1" (column label) is not one of the classes')
    assert reasons[""].startswith("malformed line: expected 7 fields, found 1: a malformed line")

    # the training data logged to MLflow carries the user's columns with their values beside sluice's label
    run = mlflow.MlflowClient(tracking_uri=mlflow_store).get_run(result["run_id"])
    (train_input,) = [d for d in run.inputs.dataset_inputs if d.tags[0].value == "train"]
    logged = {c["name"] for c in json.loads(train_input.dataset.schema)["mlflow_colspec"]}
    assert {ITEM_ID, "text", "label", "split", "source_file", LABEL} <= logged and SPLIT not in logged
    kept = pd.concat([reviews, pd.DataFrame(more[1:2])], ignore_index=True)
    expected = kept.assign(item_id=kept["item_id"].astype(str)).set_index(ITEM_ID)
    sizes = 0
    for context in ("train", "val", "test"):
        frame = pd.read_parquet(Path(result["run_dir"]) / "pending" / f"dataset_{context}.parquet").set_index(ITEM_ID)
        sizes += len(frame)
        for column in ("split", "fold", "source_file", "source_row", "label"):
            assert frame[column].equals(expected.loc[frame.index, column]), (context, column)
        assert frame[LABEL].equals(frame["label"])
    assert sizes == rows["trainable"] == sum(result["split_sizes"].values())


def test_sluice_run_names_the_file_and_exits_1(tmp_path: Path) -> None:
    """One case end to end (each costs a process start); the matrix in test_bad_input.py covers the messages."""
    from prefect.settings import PREFECT_API_URL

    path = tmp_path / "reviews.csv"
    path.write_text("item_id,review_id,text,label\n1,7,Fine.,fresh\n")
    config = _config(tmp_path, {"path": str(path), "id_column": "review_id"}, "bad-input-cli")
    # The session's Prefect test server: `sluice run` starts no server of its own.
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "SLUICE_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [SLUICE, "run", "--config", str(config)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert f'{path} has a column "item_id", which is sluice\'s id column, but source.id_column is "review_id"' in (
        done.stderr
    )
    assert "remove source.id_column (or set it to item_id)" in done.stderr
