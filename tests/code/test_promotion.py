from __future__ import annotations

import pytest

from tasks.model_card import CardInputs, build_model_card
from tasks.promotion import DataGates, PromotionConfig, decide_promotion, input_key

CLEAN = DataGates(expectations_passed=True, suites=["raw", "clean"], leakage_passed=True)
GOOD = {"accuracy": 0.80, "f1_macro": 0.78}


@pytest.mark.parametrize(
    ("gates", "metrics", "champion", "config", "promote", "failed"),
    [
        (CLEAN, GOOD, None, PromotionConfig(), True, []),
        (CLEAN, GOOD, None, PromotionConfig(first_run="hold"), False, ["champion"]),
        (CLEAN, GOOD, {"f1_macro": 0.70}, PromotionConfig(margin=0.01), True, []),
        (CLEAN, GOOD, {"f1_macro": 0.775}, PromotionConfig(margin=0.01), False, ["champion"]),
        (CLEAN, GOOD, {"f1_macro": 0.90}, PromotionConfig(), False, ["champion"]),
        (CLEAN, {"accuracy": 0.55, "f1_macro": 0.5}, None, PromotionConfig(), False, ["floor.accuracy"]),
        (DataGates(False, ["clean"], True), GOOD, None, PromotionConfig(), False, ["expectations"]),
        (DataGates(True, ["clean"], False), GOOD, None, PromotionConfig(), False, ["leakage"]),
        (DataGates(True, ["clean"], True, alpha=0.5), GOOD, None, PromotionConfig(), False, ["agreement"]),
        (DataGates(True, ["clean"], True, alpha=0.81), GOOD, None, PromotionConfig(), True, []),
    ],
    ids=[
        "first run",
        "first run held",
        "better",
        "within margin",
        "worse",
        "below floor",
        "expectations failed",
        "leakage failed",
        "alpha low",
        "alpha fine",
    ],
)
def test_gate_decisions(
    gates: DataGates,
    metrics: dict[str, float],
    champion: dict[str, float] | None,
    config: PromotionConfig,
    promote: bool,
    failed: list[str],
) -> None:
    decision = decide_promotion(config, gates=gates, metrics=metrics, champion_metrics=champion, champion_version="3")
    assert decision.promote is promote
    assert [c.name for c in decision.failed] == failed
    tags = decision.as_tags()
    assert tags["sluice.promotion"] == ("champion" if promote else "challenger")
    for name in failed:
        assert tags[f"sluice.gate.{name}"].startswith("FAILED: ")


def test_reasons_are_plain_words_with_amounts() -> None:
    decision = decide_promotion(
        PromotionConfig(margin=0.02),
        gates=CLEAN,
        metrics=GOOD,
        champion_metrics={"f1_macro": 0.77},
        champion_version="4",
    )
    detail = next(c.detail for c in decision.checks if c.name == "champion")
    assert detail == "f1_macro 0.780 vs champion v4 0.770 on the same test set (+0.010; needs > +0.020)"
    floor = next(c.detail for c in decision.checks if c.name == "floor.accuracy")
    assert floor == "test accuracy 0.800 ≥ floor 0.600 (by +0.200)"


def test_unscorable_champion_never_promotes() -> None:
    decision = decide_promotion(
        PromotionConfig(), gates=CLEAN, metrics=GOOD, champion_metrics=None, champion_error="MLflow unreachable"
    )
    assert not decision.promote and "MLflow unreachable" in decision.summary()


def test_input_key_changes_with_any_input() -> None:
    base = {"snapshot_id": "s", "labels_hash": "l", "config_hash": "c", "code_version": "v"}
    keys = {input_key(**(base | {k: "other"})) for k in base} | {input_key(**base)}
    assert len(keys) == 5


def test_model_card_holds_what_a_reviewer_needs() -> None:
    card = build_model_card(
        CardInputs(
            model_name="m",
            dataset="d",
            snapshot_id="snap1",
            rows={"rows_in": 10, "trainable": 8, "awaiting": 1, "quarantined_total": 1, "quarantined": {"dedupe": 1}},
            label_distribution={"a": 4, "b": 4},
            labels_source="annotation consensus",
            split_strategy="stratified",
            split_sizes={"train": 6, "val": 1, "test": 1},
            split_manifest_hash="abcdef" * 4,
            leakage_passed=True,
            leakage_findings=["groups: none"],
            expectations={"clean": True},
            metrics={"f1_macro": 0.8},
            intervals={"f1_macro": (0.7, 0.9)},
            decision_markdown="**Promotion: promoted**",
            champion_version="2",
            champion_metrics={"f1_macro": 0.75},
            annotators=["alice", "bob"],
            alpha=0.81,
            export_hash="e" * 64,
        )
    )
    for expected in (
        "snapshot `snap1`",
        "a: 4, b: 4",
        "Krippendorff's alpha: 0.810",
        "alice, bob",
        "| f1_macro | 0.8000 | [0.700, 0.900] | 0.7500 |",
        "champion v2",
        "leakage report: clean",
    ):
        assert expected in card
