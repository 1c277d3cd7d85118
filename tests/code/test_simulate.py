"""The demo-annotator simulator: deterministic, distinct annotators per item, error rates honoured."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.annotations import parse_export
from tasks.simulate import (
    DEMO_ANNOTATORS,
    SimulatorConfig,
    build_annotation_payloads,
    simulate_annotations,
)

CLASSES = ["fresh", "rotten"]


def _items(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "label": rng.choice(CLASSES, size=n)})


def test_same_seed_same_annotations_other_seed_differs() -> None:
    items = _items(200)
    first = simulate_annotations(items, DEMO_ANNOTATORS, CLASSES, overlap=3, seed=1)
    again = simulate_annotations(items, DEMO_ANNOTATORS, CLASSES, overlap=3, seed=1)
    other = simulate_annotations(items, DEMO_ANNOTATORS, CLASSES, overlap=3, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert not first["label"].equals(other["label"])


@pytest.mark.parametrize("overlap", [1, 2, 3])
def test_each_item_gets_overlap_distinct_annotators(overlap: int) -> None:
    sim = simulate_annotations(_items(500), DEMO_ANNOTATORS, CLASSES, overlap=overlap, seed=3)
    per_item = sim.groupby("item_id")["annotator"].agg(["count", "nunique"])
    assert len(per_item) == 500
    assert (per_item["count"] == overlap).all()
    assert (per_item["nunique"] == overlap).all()
    assert list(sim.columns) == ["item_id", "annotator", "label", "lead_time"]


def test_error_rates_are_honoured_and_the_noisiest_stands_out() -> None:
    items = _items(6000)
    sim = simulate_annotations(items, DEMO_ANNOTATORS, CLASSES, overlap=3, seed=5)
    merged = sim.merge(items, on="item_id", suffixes=("", "_ref"))
    observed = (merged["label"] != merged["label_ref"]).groupby(merged["annotator"]).mean()
    for name, rate in DEMO_ANNOTATORS.items():
        assert observed[name] == pytest.approx(rate, abs=0.02)
    assert observed.idxmax() == max(DEMO_ANNOTATORS, key=DEMO_ANNOTATORS.__getitem__)


def test_wrong_labels_spread_over_the_other_classes() -> None:
    classes = [str(d) for d in range(10)]
    items = pd.DataFrame({"item_id": range(4000), "label": ["3"] * 4000})
    sim = simulate_annotations(items, {"a": 1.0, "b": 1.0}, classes, overlap=2, seed=0)
    assert "3" not in set(sim["label"])  # error rate 1: never the reference
    assert set(sim["label"]) == set(classes) - {"3"}


def test_lead_times_are_positive_with_the_requested_mean() -> None:
    sim = simulate_annotations(_items(4000), DEMO_ANNOTATORS, CLASSES, overlap=3, seed=0, mean_lead_time_s=6.0)
    assert (sim["lead_time"] > 0).all()
    assert sim["lead_time"].mean() == pytest.approx(6.0, rel=0.05)


@pytest.mark.parametrize(
    ("overlap", "message"),
    [(4, "overlap=4 needs between 1 and 3"), (0, "overlap=0")],
)
def test_impossible_overlap_is_refused(overlap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_annotations(_items(10), DEMO_ANNOTATORS, CLASSES, overlap=overlap, seed=0)


def test_unknown_reference_labels_are_named() -> None:
    items = pd.DataFrame({"item_id": [1, 2], "label": ["fresh", "plot"]})
    with pytest.raises(ValueError, match=r"\['plot'\]"):
        simulate_annotations(items, DEMO_ANNOTATORS, CLASSES, overlap=1, seed=0)


def test_simulator_config_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SimulatorConfig(annotators={"a": 1.5})
    assert SimulatorConfig().annotators == DEMO_ANNOTATORS


def test_payloads_round_trip_through_parse_export() -> None:
    items = _items(50)
    sim = simulate_annotations(items, DEMO_ANNOTATORS, CLASSES, overlap=3, seed=9)
    user_ids = {name: i + 10 for i, name in enumerate(DEMO_ANNOTATORS)}
    payloads = build_annotation_payloads(sim, user_ids, from_name="label", to_name="text")
    assert set(payloads) == set(items["item_id"])
    first = payloads["i0"][0]
    assert first["result"][0]["type"] == "choices" and first["ground_truth"] is False
    # The shape Label Studio exports is what parse_export reads back: same labels, same annotators.
    export = [
        {
            "id": n,
            "data": {"item_id": item_id},
            "annotations": [
                {**p, "id": 100 * n + k, "completed_by": p["completed_by"], "was_cancelled": False,
                 "created_at": f"2026-11-20T10:00:{k:02d}Z"}
                for k, p in enumerate(anns)
            ],
        }
        for n, (item_id, anns) in enumerate(payloads.items())
    ]  # fmt: skip
    names = {uid: name for name, uid in user_ids.items()}
    parsed = parse_export(export, classes=CLASSES, overlap=3, user_names=names)
    back = parsed.annotations[["item_id", "annotator", "label"]].sort_values(["item_id", "annotator"])
    expected = sim[["item_id", "annotator", "label"]].sort_values(["item_id", "annotator"])
    pd.testing.assert_frame_equal(back.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)


def test_payloads_need_a_user_for_every_annotator() -> None:
    sim = simulate_annotations(_items(5), DEMO_ANNOTATORS, CLASSES, overlap=3, seed=0)
    with pytest.raises(ValueError, match="ensure_users"):
        build_annotation_payloads(sim, {"alice@sluice.local": 1}, from_name="label", to_name="text")


class _Stream:
    """Serves each task once, like Label Studio's stream for one annotator, and records the submissions."""

    def __init__(self, items: list[str]) -> None:
        self.queue = list(items)
        self.submitted: list[tuple[int, str]] = []

    def next_task(self, project_id: int) -> dict[str, object] | None:
        if not self.queue:
            return None
        item = self.queue[0]
        return {"id": 100 + int(item[1:]), "data": {"item_id": item}}

    def submit_annotation(self, task_id: int, result: object, *, lead_time: float | None = None) -> int:
        self.queue.pop(0)
        assert lead_time is not None and lead_time > 0
        self.submitted.append((task_id, result[0]["value"]["choices"][0]))  # type: ignore[index]
        return len(self.submitted)


def test_a_simulated_annotator_works_through_the_stream() -> None:
    from tasks.simulate import label_stream

    def build(label: str) -> list[dict[str, object]]:
        return [{"value": {"choices": [label]}}]

    reference = {f"i{k}": ("fresh", "rotten")[k % 2] for k in range(40)}
    stream = _Stream(list(reference))
    given = label_stream(stream, 1, reference, classes=["fresh", "rotten"], build_result=build, error_rate=0.25, seed=3)
    assert len(given) == 40 and len(stream.submitted) == 40  # until the stream had nothing left
    wrong = sum(given[item] != reference[item] for item in given)
    assert 4 <= wrong <= 16  # about a quarter
    assert label_stream(
        _Stream(list(reference)), 1, reference, classes=["fresh", "rotten"], build_result=build, limit=5
    )
    with pytest.raises(ValueError, match="no reference label"):
        label_stream(_Stream(["i99"]), 1, reference, classes=["fresh", "rotten"], build_result=build)
