"""Suites that `sluice init` drafts pass, through the real GX validation, on the real data they were drafted from.

And they have teeth: a row unlike anything in the profiled data is quarantined, with the expectation it broke.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sluice.config import load_config
from sluice.home import Home
from tasks.clean import clean_frame
from tasks.columns import ITEM_ID, SOURCE_FILE, SOURCE_ROW
from tasks.demo_data import demo_dataset, write_demo_data
from tasks.ingest import SourceConfig, ingest_files
from tasks.profile import Roles, draft_pipeline, read_data, write_draft
from tasks.validate import validate_frame

# One planted row per data set, outside what its profile saw, and the expectation that must catch it.
PLANTED = {
    "amazon_reviews": ({"product": "B000000000", "review": "Arrived broken, but tasty.", "score": "terrible"}, "score"),
    "seattle_weather": (
        {"date": "2016-01-01", "precipitation": 0.0, "temp_max": 9.0, "temp_min": 2.0, "wind": 80.0, "weather": "sun"},
        "wind",
    ),
    "mnist_digits": ({"image": "/data/notes.txt", "digit": 3}, "image"),
}


@pytest.mark.parametrize(
    ("dataset", "rows"), [("amazon_reviews", None), ("seattle_weather", None), ("mnist_digits", 300)]
)
def test_drafted_suites_pass_on_their_data_and_quarantine_the_unseen(
    dataset: str, rows: int | None, home: Home, tmp_path: Path
) -> None:
    spec = demo_dataset(dataset)
    path = write_demo_data(dataset, spec.destination(home.raw), rows=rows)
    data = read_data(str(path), base_dir=tmp_path, source=SourceConfig(path=str(path)))
    write_draft(draft_pipeline(data, Roles(**spec.roles), name=dataset, source_path=str(path)), tmp_path)
    config = load_config(tmp_path / "configs" / f"{dataset}.yaml")

    snapshot = ingest_files([path], snapshot_root=home.snapshots, config=config.source)
    raw, raw_outcome = validate_frame(
        snapshot.load(),
        config.resolve_path(config.expectations.raw_suite or ""),
        gx_root=home.gx,
        asset=f"{dataset}-raw",
        where=f"snapshot {snapshot.snapshot_id}",
    )
    assert raw_outcome.success and len(raw) == snapshot.rows == data.rows
    cleaned = clean_frame(raw, config.clean)

    row, column = PLANTED[dataset]
    planted = pd.DataFrame([row | {ITEM_ID: "planted", SOURCE_FILE: path.name, SOURCE_ROW: -1}])
    gated, outcome = validate_frame(
        pd.concat([cleaned.data, planted.astype(cleaned.data.dtypes.to_dict())], ignore_index=True),
        config.resolve_path(config.expectations.clean_suite or ""),
        gx_root=home.gx,
        asset=f"{dataset}-clean",
        where="the clean data",
    )
    assert outcome.success and len(gated) == len(cleaned.data)  # every profiled row passes the gate
    assert outcome.quarantine["item_id"].tolist() == ["planted"]
    assert f'("{column}")' in outcome.quarantine["reason"].iloc[0]
