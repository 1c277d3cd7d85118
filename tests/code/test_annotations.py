"""Cleaning a Label Studio export: every raw annotation is kept or counted under one reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.annotations import (
    AnnotationConfig,
    EmptyExportError,
    compute_coverage,
    load_export,
    parse_export,
)

CLASSES = ["fresh", "rotten"]


def _ann(
    ann_id: int, user: int | str, label: str | list[str] | None, minute: int, *, cancelled: bool = False
) -> dict[str, Any]:
    labels = [] if label is None else [label] if isinstance(label, str) else label
    completed_by: Any = user if isinstance(user, int) else {"id": 0, "email": user}
    return {
        "id": ann_id,
        "completed_by": completed_by,
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": labels}}]
        if labels
        else [],
        "was_cancelled": cancelled,
        "lead_time": 2.5,
        "created_at": f"2026-11-20T10:{minute:02d}:00.000000Z",
    }


def _task(task_id: int, item_id: str | None, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {"text": f"review {task_id}"}
    if item_id is not None:
        data["item_id"] = item_id
    return {"id": task_id, "data": data, "annotations": annotations}


def _messy_export() -> list[dict[str, Any]]:
    return [
        # a: three clean annotators plus a fourth beyond the overlap
        _task(1, "a", [
            _ann(1, "u1@x", "fresh", 1), _ann(2, "u2@x", "fresh", 2),
            _ann(3, "u3@x", "rotten", 3), _ann(4, "u4@x", "fresh", 4),
        ]),
        # b: u1 twice (the newer, rotten, wins), one skip, one unknown label, one empty
        _task(2, "b", [
            _ann(5, "u1@x", "fresh", 1), _ann(6, "u1@x", "rotten", 9),
            _ann(7, "u2@x", None, 2, cancelled=True), _ann(8, "u3@x", "plot", 3),
            _ann(9, "u4@x", None, 4),
        ]),
        # c: two labels in one annotation; a task without item_id
        _task(3, "c", [_ann(10, "u1@x", ["fresh", "rotten"], 1), _ann(11, "u2@x", "rotten", 2)]),
        _task(4, None, [_ann(12, "u1@x", "fresh", 1)]),
        # d: no annotations yet
        _task(5, "d", []),
    ]  # fmt: skip


def test_every_annotation_is_accounted_for() -> None:
    parsed = parse_export(_messy_export(), classes=CLASSES, overlap=3)
    counts = parsed.summary()
    assert counts == {
        "tasks": 5,
        "raw_annotations": 12,
        "kept": 5,  # a:u1,u2,u3  b:u1(rotten)  c:u2
        "cancelled": 1,
        "duplicates_dropped": 1,
        "rejected": 4,  # plot, empty, two labels, no item_id
        "over_overlap_dropped": 1,
    }
    assert counts["raw_annotations"] == sum(v for k, v in counts.items() if k not in ("tasks", "raw_annotations"))


def test_newest_annotation_of_a_user_wins() -> None:
    kept = parse_export(_messy_export(), classes=CLASSES, overlap=3).annotations
    row = kept[(kept["item_id"] == "b") & (kept["annotator"] == "u1@x")]
    assert row["label"].tolist() == ["rotten"]
    assert row["annotation_id"].tolist() == [6]


def test_overlap_keeps_the_first_annotators() -> None:
    kept = parse_export(_messy_export(), classes=CLASSES, overlap=3).annotations
    assert sorted(kept.loc[kept["item_id"] == "a", "annotator"]) == ["u1@x", "u2@x", "u3@x"]
    no_cut = parse_export(_messy_export(), classes=CLASSES, overlap=None)
    assert no_cut.n_over_overlap_dropped == 0
    assert (no_cut.annotations["item_id"] == "a").sum() == 4


def test_rejected_rows_carry_their_reason() -> None:
    rejected = parse_export(_messy_export(), classes=CLASSES, overlap=3).rejected
    reasons = dict(zip(rejected["annotation_id"], rejected["reason"], strict=True))
    assert "'plot' is not one of the classes" in reasons[8]
    assert "empty result" in reasons[9]
    assert "several labels" in reasons[10]
    assert "no data.item_id" in reasons[12]


def test_kept_rows_have_types_a_report_can_use() -> None:
    kept = parse_export(_messy_export(), classes=CLASSES, overlap=3).annotations
    assert list(kept.columns) == [
        "item_id",
        "task_id",
        "annotation_id",
        "annotator",
        "label",
        "lead_time",
        "created_at",
    ]
    assert str(kept["created_at"].dt.tz) == "UTC"
    assert kept["lead_time"].dtype == "float64"
    assert set(kept["label"]) <= set(CLASSES)


def test_bare_user_ids_are_named_when_a_mapping_is_given() -> None:
    export = [_task(1, "a", [_ann(1, 7, "fresh", 1), _ann(2, 8, "rotten", 2)])]
    named = parse_export(export, classes=CLASSES, overlap=None, user_names={7: "ann@x"}).annotations
    assert sorted(named["annotator"]) == ["ann@x", "user-8"]


def test_same_item_in_two_tasks_counts_as_a_duplicate() -> None:
    export = [_task(1, "a", [_ann(1, "u1@x", "fresh", 1)]), _task(2, "a", [_ann(2, "u1@x", "rotten", 5)])]
    parsed = parse_export(export, classes=CLASSES, overlap=3)
    assert parsed.n_duplicates_dropped == 1
    assert parsed.annotations["label"].tolist() == ["rotten"]


def test_empty_export_is_an_error_but_unlabelled_tasks_are_not() -> None:
    with pytest.raises(EmptyExportError, match="no tasks"):
        parse_export([], classes=CLASSES, overlap=3)
    parsed = parse_export([_task(1, "a", [])], classes=CLASSES, overlap=3)
    assert parsed.annotations.empty and parsed.rejected.empty
    assert parsed.n_raw_annotations == 0


def test_coverage_counts_items_with_full_overlap() -> None:
    kept = parse_export(_messy_export(), classes=CLASSES, overlap=3).annotations
    assert compute_coverage(kept, ["a", "b", "c", "d"], overlap=3) == 0.25
    assert compute_coverage(kept, ["a", "b", "c", "d"], overlap=1) == 0.75
    assert compute_coverage(kept, [], overlap=3) == 1.0


def test_load_export_checks_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_messy_export()))
    import hashlib

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(load_export(path, expected_sha256=sha)) == 5
    path.write_text(json.dumps(_messy_export()[:2]))
    with pytest.raises(ValueError, match="sha256"):
        load_export(path, expected_sha256=sha)


def test_annotation_config_defaults_and_bounds() -> None:
    config = AnnotationConfig()
    assert config.overlap == 3 and not config.simulate
    assert len(config.simulator.annotators) == 3
    with pytest.raises(ValueError):
        AnnotationConfig(overlap=0)
    with pytest.raises(ValueError):
        AnnotationConfig(min_coverage=1.5)


def test_parse_handles_a_large_export_quickly() -> None:
    export = [
        _task(i, f"i{i}", [_ann(3 * i + k, f"u{k}@x", CLASSES[(i + k) % 2], k) for k in range(3)]) for i in range(5000)
    ]
    parsed = parse_export(export, classes=CLASSES, overlap=3)
    assert parsed.n_kept == 15000
    assert isinstance(parsed.annotations, pd.DataFrame)


def test_reannotating_keeps_the_annotators_slot() -> None:
    # u1 annotates first, u2 and u3 next, then u4 beyond the overlap, then u1 changes their mind.
    export = [
        _task(1, "a", [
            _ann(1, "u1@x", "fresh", 1), _ann(2, "u2@x", "fresh", 2), _ann(3, "u3@x", "fresh", 3),
            _ann(4, "u4@x", "fresh", 4), _ann(5, "u1@x", "rotten", 5),
        ]),
    ]  # fmt: skip
    parsed = parse_export(export, classes=CLASSES, overlap=3)
    kept = dict(zip(parsed.annotations["annotator"], parsed.annotations["label"], strict=True))
    assert kept == {"u1@x": "rotten", "u2@x": "fresh", "u3@x": "fresh"}
    assert (parsed.n_duplicates_dropped, parsed.n_over_overlap_dropped) == (1, 1)
