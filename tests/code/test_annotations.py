"""Cleaning a Label Studio export: every raw annotation is kept or counted under one reason."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.annotations import (
    AnnotationConfig,
    EmptyExportError,
    GoldFileError,
    compute_coverage,
    gold_item_id,
    interleave_gold,
    load_export,
    load_gold,
    parse_export,
    parse_with_gold,
    plan_gold,
    plan_stream,
    reopen_overlaps,
    summarise_progress,
)
from tasks.consensus import ConsensusConfig

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
        "excluded": 0,
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


# -- gold items ------------------------------------------------------------------------------------


def _gold_export() -> list[dict[str, Any]]:
    """Two gold items (g1 fresh, g2 rotten) answered by three people; bad@x also labels item a."""
    return [
        _task(1, "a", [_ann(1, "bad@x", "rotten", 1), _ann(2, "u1@x", "fresh", 2), _ann(3, "u2@x", "fresh", 3)]),
        _task(2, "g1", [_ann(4, "bad@x", "rotten", 1), _ann(5, "u1@x", "fresh", 2), _ann(6, "u2@x", "fresh", 3)]),
        _task(3, "g2", [_ann(7, "bad@x", "fresh", 1), _ann(8, "u1@x", "rotten", 2), _ann(9, "u2@x", "fresh", 3)]),
        # the replacement the stream served after bad@x was excluded: a fourth annotator on a
        _task(4, "b", [_ann(10, "u1@x", "rotten", 4), _ann(11, "u2@x", "rotten", 5)]),
    ]


def _with_replacement() -> list[dict[str, Any]]:
    export = _gold_export()
    export[0]["annotations"].append(_ann(12, "u3@x", "fresh", 9))
    return export


GOLD = pd.DataFrame({"item_id": ["g1", "g2"], "text": ["g one", "g two"], "label": ["fresh", "rotten"]})


def test_gold_scores_each_annotator_and_excludes_the_weak_before_the_overlap_cut() -> None:
    strict = ConsensusConfig(min_gold_accuracy=0.5, min_gold_items=2)
    synced = parse_with_gold(_with_replacement(), classes=CLASSES, overlap=3, gold=GOLD, consensus=strict)
    scores = synced.gold_scores.set_index("annotator")["gold_accuracy"].to_dict()
    assert scores == {"bad@x": 0.0, "u1@x": 1.0, "u2@x": 0.5}
    assert list(synced.excluded) == ["bad@x"] and "0 of 2 gold items" in synced.excluded["bad@x"]
    # gold items are not the user's items; bad@x is out, so u3 (4th in time) takes the slot on a
    kept = synced.items.annotations
    assert set(kept["item_id"]) == {"a", "b"}
    assert sorted(kept.loc[kept["item_id"] == "a", "annotator"]) == ["u1@x", "u2@x", "u3@x"]
    counts = synced.items.summary()
    assert counts["excluded"] == 1 and counts["over_overlap_dropped"] == 0
    assert counts["raw_annotations"] == sum(v for k, v in counts.items() if k not in ("tasks", "raw_annotations"))
    # what each person did, gold answers included, for the telemetry
    everyone = synced.all_annotations()
    assert (everyone["annotator"] == "bad@x").sum() == 3


def test_too_few_gold_answers_are_not_judged() -> None:
    lenient = ConsensusConfig(min_gold_accuracy=0.5, min_gold_items=3)
    synced = parse_with_gold(_gold_export(), classes=CLASSES, overlap=3, gold=GOLD, consensus=lenient)
    assert synced.excluded == {}
    assert synced.items.n_excluded == 0


def test_no_gold_file_parses_as_before() -> None:
    synced = parse_with_gold(_messy_export(), classes=CLASSES, overlap=3, gold=None, consensus=ConsensusConfig())
    assert synced.items.summary() == parse_export(_messy_export(), classes=CLASSES, overlap=3).summary()
    assert synced.gold is None and synced.gold_scores.empty and synced.excluded == {}


def test_reopened_items_get_a_slot_back_for_each_excluded_annotator() -> None:
    wanted = reopen_overlaps(_gold_export(), {"bad@x"}, overlap=3, skip_items={"g1", "g2"})
    assert wanted == {1: 4}  # item a: bad@x's slot goes to someone else; gold tasks are left alone


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("text,label\nfine,fresh\n", ".txt", "not CSV, JSONL or Parquet"),
        ("review,label\nfine,fresh\n", ".csv", "has no column 'text'"),
        ("text,label\nfine,plot\n", ".csv", "labels in row(s) 1 are not among labels.classes"),
        ("text,label\nfine,fresh\n ,rotten\n", ".csv", "empty 'text' in row(s) 2"),
        ("text,label\nfine,fresh\nfine,fresh\n", ".csv", "row(s) 2 repeat an earlier item"),
    ],
)
def test_bad_gold_files_are_named_with_the_fix(tmp_path: Path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"gold{suffix}"
    path.write_text(content)
    with pytest.raises(GoldFileError, match=re.escape(message)) as err:
        load_gold(path, text_col="text", classes=CLASSES)
    assert str(path) in str(err.value)


def test_gold_file_formats_read_alike(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["a fine film", "a dull film"], "label": ["fresh", "rotten"]})
    frame.to_csv(tmp_path / "gold.csv", index=False)
    frame.to_json(tmp_path / "gold.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "gold.parquet")
    loaded = [
        load_gold(tmp_path / f"gold.{ext}", text_col="text", classes=CLASSES) for ext in ("csv", "jsonl", "parquet")
    ]
    assert all(g.equals(loaded[0]) for g in loaded)
    # ids look like the user's content ids (16 hex digits) but never equal them
    assert loaded[0]["item_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert gold_item_id("a fine film") == loaded[0]["item_id"].iloc[0]


def test_gold_is_planned_at_its_rate_and_spread_through_the_stream() -> None:
    gold = pd.DataFrame({"item_id": [f"g{i}" for i in range(10)], "text": "x", "label": "fresh"})
    first = plan_gold(gold, user_items=95, imported=[], rate=0.05)
    assert first["item_id"].tolist() == ["g0", "g1", "g2", "g3", "g4"]  # 5 of 100 tasks
    # 95 more user items later: 5 more gold, never the ones imported already
    assert plan_gold(gold, user_items=190, imported=first["item_id"], rate=0.05)["item_id"].tolist() == [
        "g5", "g6", "g7", "g8", "g9",
    ]  # fmt: skip
    assert plan_gold(gold, user_items=10_000, imported=[], rate=0.05).shape[0] == 10  # no more than the file has
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(95)], "text": "y"})
    stream = interleave_gold(items, first)
    positions = stream.index[stream["item_id"].str.startswith("g")].tolist()
    gaps = {b - a for a, b in zip([-1, *positions], [*positions, len(stream)], strict=True)}
    assert len(stream) == 100 and gaps <= {16, 17}  # one gold item about every 17 tasks, none bunched
    assert stream[~stream["item_id"].str.startswith("g")]["item_id"].tolist() == items["item_id"].tolist()


def test_progress_names_removed_people_from_their_annotations() -> None:
    log = pd.DataFrame(
        {
            "project": ["p1", "p1", "p1", "p2"],
            "user_id": [2, 2, 3, 2],
            "annotator": ["ann@x", "ann@x", "bob@x", "ann@x"],
            "cancelled": [False, True, False, False],
            "created_at": [
                "2026-12-01T10:00:00Z",
                "2026-12-01T11:00:00Z",
                "2026-12-01T09:00:00Z",
                "2026-12-02T08:00:00Z",
            ],
        }
    )
    accounts = pd.DataFrame(
        {
            "user_id": [2, 3, 4],
            "email": ["ann@x", "Deleted", "new@x"],
            "removed": [False, True, False],
            "last_activity": ["2026-12-02T08:00:00Z", None, None],
        }
    )
    table = summarise_progress(log, accounts)
    rows = {(r.annotator, r.project): (r.status, r.done, r.skipped) for r in table.itertuples()}
    assert rows == {
        ("ann@x", "p1"): ("active", 1, 1),
        ("ann@x", "p2"): ("active", 1, 0),
        ("new@x", "-"): ("active", 0, 0),
        ("bob@x", "p1"): ("removed", 1, 0),
    }
    assert table["status"].tolist()[-1] == "removed"  # active people first


def test_the_stream_gets_only_new_items_and_refuses_gold_that_is_the_users_data() -> None:
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(18)], "text": "y", "extra": 1})
    gold = pd.DataFrame({"item_id": ["g0", "g1", "g2"], "text": "x", "label": "fresh"})
    stream, gold_now = plan_stream(items, ["i0", "i1"], gold, rate=0.1, text_col="text")
    assert list(stream.columns) == ["item_id", "text"]
    assert gold_now["item_id"].tolist() == ["g0", "g1"]  # ceil(0.1 * 18 / 0.9) = 2
    assert set(stream["item_id"]) == {f"i{i}" for i in range(2, 18)} | {"g0", "g1"}
    with pytest.raises(GoldFileError, match=r"gold items \['i3'\] have the ids of the user's own rows"):
        plan_stream(items, [], gold.assign(item_id=["g0", "i3", "g2"]), rate=0.1, text_col="text")
