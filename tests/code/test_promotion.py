from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sluice.config import PipelineConfig
from tasks.columns import SPLIT
from tasks.model_card import CardInputs, build_model_card, review_summary
from tasks.promotion import (
    Comparison,
    OnnxParity,
    PromotionConfig,
    decide_promotion,
    input_key,
    select_compared_items,
)

GOOD = {"accuracy": 0.80, "f1_macro": 0.78}
PARITY = OnnxParity(gap=2e-7, tolerance=1e-3)


def _compared(champion_f1: float, items: int = 200, basis: str = "test") -> Comparison:
    return Comparison(
        champion_version="3",
        basis=basis,
        item_ids=tuple(f"i{k}" for k in range(items)),
        challenger={"f1_macro": 0.78, "accuracy": 0.80},
        champion={"f1_macro": champion_f1, "accuracy": 0.75},
    )


@pytest.mark.parametrize(
    ("kwargs", "config", "promote", "failed"),
    [
        ({"compared": None}, PromotionConfig(), True, []),
        ({"compared": None}, PromotionConfig(first_run="hold"), False, ["champion"]),
        ({"compared": _compared(0.70)}, PromotionConfig(margin=0.01), True, []),
        ({"compared": _compared(0.775)}, PromotionConfig(margin=0.01), False, ["champion"]),
        ({"compared": _compared(0.90)}, PromotionConfig(), False, ["champion"]),
        ({"compared": _compared(0.50, items=12)}, PromotionConfig(), False, ["champion"]),
        ({"compared": None, "champion_error": "lookup refused"}, PromotionConfig(), False, ["champion"]),
        (
            {"compared": None, "metrics": {"accuracy": 0.55, "f1_macro": 0.5}},
            PromotionConfig(),
            False,
            ["floor.accuracy"],
        ),
        ({"compared": None, "alpha": 0.7}, PromotionConfig(alpha_threshold=0.8), False, ["agreement"]),
        ({"compared": None, "alpha": 0.81}, PromotionConfig(alpha_threshold=0.8), True, []),
        (
            {"compared": None, "onnx": OnnxParity(gap=0.02, tolerance=1e-3)},
            PromotionConfig(require_onnx=True),
            False,
            ["onnx"],
        ),
        (
            {"compared": None, "onnx": OnnxParity(None, 1e-3, "no op")},
            PromotionConfig(require_onnx=True),
            False,
            ["onnx"],
        ),
        ({"compared": None, "onnx": PARITY}, PromotionConfig(require_onnx=True), True, []),
        ({"compared": None, "onnx": OnnxParity(gap=0.02, tolerance=1e-3)}, PromotionConfig(), True, []),
    ],
    ids=[
        "first run",
        "first run held",
        "better",
        "within margin",
        "worse",
        "too few unseen items",
        "champion lookup failed",
        "below floor",
        "alpha below the promotion floor",
        "alpha fine",
        "onnx parity required and failed",
        "onnx export required and failed",
        "onnx parity required and held",
        "onnx parity failed, not required",
    ],
)
def test_gate_decisions(kwargs: dict[str, object], config: PromotionConfig, promote: bool, failed: list[str]) -> None:
    decision = decide_promotion(config, **({"metrics": GOOD} | kwargs))  # type: ignore[arg-type]
    assert decision.promote is promote
    assert [c.name for c in decision.failed] == failed
    tags = decision.as_tags()
    assert tags["sluice.promotion"] == ("champion" if promote else "challenger")
    for name in failed:
        assert tags[f"sluice.gate.{name}"].startswith("FAILED: ")


def test_every_check_is_one_that_can_fail() -> None:
    # The expectation and leakage gates stop a run before training: a version that exists passed them,
    # so the promotion gate does not pretend to check them again.
    decision = decide_promotion(
        PromotionConfig(alpha_threshold=0.8, require_onnx=True),
        metrics=GOOD,
        compared=_compared(0.7),
        alpha=0.9,
        onnx=PARITY,
    )
    assert [c.name for c in decision.checks] == ["agreement", "floor.accuracy", "onnx", "champion"]


def test_onnx_gap_is_a_tag_whether_or_not_it_is_required() -> None:
    decision = decide_promotion(
        PromotionConfig(), metrics=GOOD, compared=None, onnx=OnnxParity(gap=0.02, tolerance=1e-3)
    )
    tags = decision.as_tags()
    assert decision.promote
    assert tags["sluice.onnx.max_abs_logit_diff"] == "2.000e-02"
    assert tags["sluice.onnx.parity"].startswith("FAILED: ONNX disagrees with PyTorch by 2.0e-02")


def test_reasons_are_plain_words_with_amounts_and_say_which_items() -> None:
    decision = decide_promotion(
        PromotionConfig(margin=0.02), metrics=GOOD, compared=_compared(0.77, items=412, basis="holdout")
    )
    detail = next(c.detail for c in decision.checks if c.name == "champion")
    assert detail == (
        "f1_macro 0.780 vs champion v3 0.770 on 412 holdout items neither version trained or validated on "
        "(+0.010; needs > +0.020)"
    )
    assert decision.as_tags()["sluice.compared_items"] == (
        "412 holdout items neither version trained or validated on (with champion v3)"
    )
    floor = next(c.detail for c in decision.checks if c.name == "floor.accuracy")
    assert floor == "test accuracy 0.800 ≥ floor 0.600 (by +0.200)"


def test_manual_approval_waits_even_when_every_gate_passes() -> None:
    decision = decide_promotion(PromotionConfig(approval="manual"), metrics=GOOD, compared=None)
    assert decision.promote and decision.awaits_review
    assert decision.as_tags()["sluice.promotion"] == "awaiting review"
    failing = decide_promotion(PromotionConfig(approval="manual", first_run="hold"), metrics=GOOD, compared=None)
    assert not failing.awaits_review  # a reviewer approves only what passed the gates


def test_compared_items_are_the_ones_neither_version_trained_on() -> None:
    data = pd.DataFrame(
        {"item_id": ["a", "b", "c", "d", "e", "f"], SPLIT: ["train", "val", "test", "test", "test", "train"]}
    )
    # the champion was split before a reshuffle: it trained on c, validated on d, and never saw e
    champion = pd.DataFrame({"item_id": ["a", "b", "c", "d", "x"], "split": ["test", "train", "train", "val", "test"]})
    basis, rows = select_compared_items(data, champion)
    assert basis == "test" and rows["item_id"].tolist() == ["e"]
    with_holdout = data.assign(**{SPLIT: ["train", "val", "test", "holdout", "holdout", "train"]})
    basis, rows = select_compared_items(with_holdout, champion)
    assert basis == "holdout" and rows["item_id"].tolist() == ["e"]


def test_input_key_changes_with_any_input() -> None:
    base = {"snapshot": "s", "labels": "l", "config": "c", "code": "v", "packages": "p", "split_manifest": "m"}
    keys = {input_key(**(base | {k: "other"})) for k in base} | {input_key(**base)}
    assert len(keys) == len(base) + 1


def test_the_pipelines_training_key_sees_tuning_and_installed_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import training_key
    from sluice import fingerprint
    from sluice.config import parse_config

    def config(**tuning: object) -> PipelineConfig:
        raw = {
            "name": "keyed",
            "source": {"path": "unused.csv"},
            "labels": {"source": "column", "column": "y", "classes": ["a", "b"]},
            "registry": {"model_name": "keyed"},
            "tuning": {"method": "grid", "grid": {"lr": [0.01]}} | tuning,
        }
        return parse_config(raw, base_dir=tmp_path)

    def key(cfg: PipelineConfig) -> str:
        return training_key(cfg, snapshot_id="s", labels="l", code="c", split_manifest="m")

    base = key(config())
    assert key(config()) == base  # identical inputs: the existing version is found again
    assert key(config(grid={"lr": [0.02]})) != base  # a new grid trains another model
    assert key(config(method="optuna", n_trials=3)) != key(config(method="optuna", n_trials=5))
    assert training_key(config(), snapshot_id="s", labels="l", code="c", split_manifest="other") != base
    monkeypatch.setattr(fingerprint, "package_versions", lambda: "torch==9.9")
    assert key(config()) != base  # a new torch or pandas is another model too


def _card(**overrides: object) -> CardInputs:
    fields: dict[str, object] = {
        "model_name": "m",
        "dataset": "d",
        "snapshot_id": "snap1",
        "rows": {"rows_in": 10, "trainable": 8, "awaiting": 1, "quarantined_total": 1, "quarantined": {"dedupe": 1}},
        "label_distribution": {"a": 4, "b": 4},
        "labels_source": "annotation consensus",
        "split_strategy": "stratified",
        "split_sizes": {"train": 6, "val": 1, "test": 1},
        "split_manifest_hash": "abcdef" * 4,
        "split_assignment": "carried forward from assignment 0123456789ab: 7 rows kept their split, 1 new rows",
        "leakage_passed": True,
        "leakage_findings": ["groups: none"],
        "expectations": {"clean": True},
        "metrics": {"f1_macro": 0.8},
        "intervals": {"f1_macro": (0.7, 0.9)},
        "decision_markdown": "**Promotion: promoted**",
        "compared": _compared(0.75, items=40, basis="holdout"),
        "onnx": PARITY.describe(),
        "annotators": ["alice", "bob"],
        "alpha": 0.81,
        "export_hash": "e" * 64,
    }
    return CardInputs(**(fields | overrides))  # type: ignore[arg-type]


def test_model_card_holds_what_a_reviewer_needs() -> None:
    card = build_model_card(_card())
    for expected in (
        "snapshot `snap1`",
        "a: 4, b: 4",
        "Krippendorff's alpha: 0.810",
        "alice, bob",
        "| f1_macro | 0.8000 | [0.700, 0.900] |",
        "On 40 holdout items neither version trained or validated on:",
        "| f1_macro | 0.7800 | 0.7500 |",
        "champion v3",
        "carried forward from assignment 0123456789ab",
        "leakage report: clean",
        "ONNX matches PyTorch",
    ):
        assert expected in card
    assert "RESHUFFLED" not in card


def test_a_reshuffled_split_is_said_loudly_on_the_card_and_the_review() -> None:
    card = build_model_card(_card(reshuffled=True))
    assert card.splitlines()[2].startswith("> **⚠ SPLIT RESHUFFLED**")
    summary = review_summary(_card(reshuffled=True), version="4", model_link="(link)")
    assert "SPLIT RESHUFFLED" in summary and "## Review m version 4" in summary
    assert "**Promotion: promoted**" in summary and "holdout items" in summary
