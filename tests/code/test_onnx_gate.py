"""ONNX parity as the promotion gate reads it: the gap is always measured, and can block promotion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.promotion import PromotionConfig, decide_promotion
from tasks.report import export_onnx_checked
from tasks.train import TrainConfig, train_model

GOOD = {"accuracy": 0.9, "f1_macro": 0.9}


@pytest.fixture(scope="module")
def predictor() -> Any:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "y": ["a", "b"] * 12,
            "text": [" ".join(rng.choice(["good", "bad", "film", "plot"], size=4)) for _ in range(24)],
        }
    )
    config = TrainConfig(task="text", epochs=1, progress=False, device="cpu", n_buckets=2**10, embed_dim=8)
    return train_model(df, df, label_col="y", classes=["a", "b"], config=config, text_col="text").predictor


SAMPLE = pd.DataFrame({"text": ["good film", "bad plot", "film"]})


def test_a_faithful_export_passes_and_records_its_gap(predictor: Any, tmp_path: Path) -> None:
    parity = export_onnx_checked(predictor, SAMPLE, tmp_path / "model.onnx", tolerance=1e-3)
    assert parity.passed and parity.gap is not None and parity.gap < 1e-3
    decision = decide_promotion(PromotionConfig(require_onnx=True), metrics=GOOD, compared=None, onnx=parity)
    assert decision.promote and decision.as_tags()["sluice.onnx.parity"].startswith("passed: ONNX matches")


def test_a_disagreeing_export_is_tagged_and_blocks_promotion_when_required(
    predictor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    # A runtime whose numbers drift from PyTorch's (a kernel or opset difference) cannot be built on
    # demand: shift the real session's output instead.
    real_run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda self, *a, **k: [o + 0.05 for o in real_run(self, *a, **k)])
    parity = export_onnx_checked(predictor, SAMPLE, tmp_path / "model.onnx", tolerance=1e-3)
    assert not parity.passed and parity.gap == pytest.approx(0.05, abs=1e-4)

    relaxed = decide_promotion(PromotionConfig(), metrics=GOOD, compared=None, onnx=parity)
    assert relaxed.promote  # not required: promoted, but the gap is on the version either way
    assert relaxed.as_tags()["sluice.onnx.max_abs_logit_diff"] == "5.000e-02"
    assert relaxed.as_tags()["sluice.onnx.parity"].startswith("FAILED: ONNX disagrees with PyTorch")

    strict = decide_promotion(PromotionConfig(require_onnx=True), metrics=GOOD, compared=None, onnx=parity)
    assert not strict.promote and [c.name for c in strict.failed] == ["onnx"]
    assert "do not ship it" in strict.as_tags()["sluice.gate.onnx"]


def test_a_failed_export_is_recorded_and_blocks_promotion_when_required(
    predictor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(predictor), "export_onnx", lambda self, path: (_ for _ in ()).throw(RuntimeError("op")))
    parity = export_onnx_checked(predictor, SAMPLE, tmp_path / "model.onnx", tolerance=1e-3)
    assert parity.gap is None and parity.error == "RuntimeError: op"
    strict = decide_promotion(PromotionConfig(require_onnx=True), metrics=GOOD, compared=None, onnx=parity)
    assert not strict.promote and strict.as_tags()["sluice.onnx.max_abs_logit_diff"] == "n/a"
