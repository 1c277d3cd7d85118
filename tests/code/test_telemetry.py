"""Annotator telemetry: volume, speed, gold accuracy and quality per person, as a table, metrics and a plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.agreement import annotator_agreement
from tasks.consensus import score_gold
from tasks.telemetry import (
    TELEMETRY_COLUMNS,
    annotator_telemetry,
    plot_annotator_telemetry,
    telemetry_markdown,
    telemetry_metrics,
)


def _annotations() -> pd.DataFrame:
    """12 items by ann, bob and cy; cy disagrees on every fourth item and is slow."""
    rows = []
    for i in range(12):
        truth = "fresh" if i % 2 else "rotten"
        for who, lead in (("ann@x", 4.0), ("bob@x", 6.0), ("cy@x", 20.0)):
            label = ("rotten" if truth == "fresh" else "fresh") if who == "cy@x" and i % 4 == 0 else truth
            rows.append({"item_id": f"i{i}", "annotator": who, "label": label, "lead_time": lead + i % 3})
    return pd.DataFrame(rows)


def test_telemetry_table_has_each_persons_numbers() -> None:
    annotations = _annotations()
    gold = pd.DataFrame({"item_id": ["g1", "g2"], "label": ["fresh", "rotten"]})
    answers = pd.DataFrame(
        {
            "item_id": ["g1", "g2", "g1", "g2"],
            "annotator": ["ann@x", "ann@x", "cy@x", "cy@x"],
            "label": ["fresh", "rotten", "fresh", "fresh"],
        }
    )
    table = annotator_telemetry(
        annotations,
        annotator_agreement(annotations),
        score_gold(answers, gold),
        excluded={"cy@x": "gold accuracy 50%"},
    )
    assert list(table.columns) == TELEMETRY_COLUMNS
    rows = table.set_index("annotator")
    assert rows.loc["ann@x", "items_done"] == 12
    assert rows.loc["ann@x", "median_lead_time_s"] == 5.0  # lead times 4, 5, 6 in equal numbers
    assert rows.loc["cy@x", "median_lead_time_s"] == 21.0
    assert rows.loc["ann@x", "gold_accuracy"] == 1.0 and rows.loc["cy@x", "gold_accuracy"] == 0.5
    assert math.isnan(rows.loc["bob@x", "gold_accuracy"]) and rows.loc["bob@x", "gold_items"] == 0
    assert rows.loc["cy@x", "quality_score"] == 0.75  # wrong on 3 of 12, against ann and bob who agree
    assert rows.loc["cy@x", "status"] == "excluded" and rows.loc["cy@x", "reason"] == "gold accuracy 50%"
    assert table["annotator"].iloc[0] == "cy@x"  # lowest quality first
    assert table["crowdlab_quality"].isna().all()  # kept for cleanlab's CROWDLAB

    metrics = telemetry_metrics(table)
    assert metrics["annotator_cy_x_median_lead_time_s"] == 21.0
    assert metrics["annotator_ann_x_gold_accuracy"] == 1.0
    assert "annotator_bob_x_gold_accuracy" not in metrics  # no gold answered: no number invented
    assert all(not np.isnan(v) for v in metrics.values())

    markdown = telemetry_markdown(table)
    assert "| cy@x | excluded | 12 | 21.0 | 2 | 50% |" in markdown
    assert "- cy@x: gold accuracy 50%" in markdown


def test_telemetry_plot_is_written(tmp_path: Path) -> None:
    annotations = _annotations()
    table = annotator_telemetry(
        annotations, annotator_agreement(annotations), score_gold(annotations.head(0), annotations)
    )
    path = plot_annotator_telemetry(table, tmp_path / "plots" / "annotators.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_no_annotations_yet_gives_an_empty_table_and_plot(tmp_path: Path) -> None:
    empty = pd.DataFrame(columns=["item_id", "annotator", "label", "lead_time"])
    table = annotator_telemetry(
        empty, pd.DataFrame(columns=["annotator", "agreement", "kappa"]), score_gold(empty, empty)
    )
    assert table.empty and list(table.columns) == TELEMETRY_COLUMNS
    assert plot_annotator_telemetry(table, tmp_path / "empty.png").is_file()
