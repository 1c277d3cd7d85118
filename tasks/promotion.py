"""The promotion gate: may a new model version become `champion`? Every check says why, in plain words.

Only checks that can fail at this point are here: the expectation and leakage gates stop a run
before training, so a version that exists has passed them (its tags and model card say so).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tasks.columns import ITEM_ID, SPLIT
from tasks.split import HOLDOUT


class PromotionConfig(BaseModel):
    """When a new version may take the `champion` alias."""

    model_config = ConfigDict(extra="forbid")

    metric: str = "f1_macro"
    """The metric that compares challenger and champion (higher is better)."""
    floors: dict[str, float] = Field(default_factory=lambda: {"accuracy": 0.6})
    """Absolute minimums on test metrics."""
    margin: float = 0.0
    """How much the challenger must beat the champion by on `metric`, on items neither trained on."""
    min_compared_items: int = Field(30, ge=1)
    """Fewest items neither version trained or validated on that a comparison with the champion needs."""
    first_run: Literal["promote", "hold"] = "promote"
    """With no champion yet: promote a version that passes every other gate, or hold it for human review."""
    alpha_threshold: float | None = Field(None, ge=-1.0, le=1.0)
    """A Krippendorff's alpha the labels must reach for promotion, stricter than `consensus.alpha_threshold`
    (which stops the run before training); None: that gate alone."""
    require_onnx: bool = False
    """Block promotion when the ONNX export failed or disagrees with PyTorch by more than `onnx_tolerance`."""
    onnx_tolerance: float = Field(1e-3, gt=0.0)
    """Largest |logit| difference between ONNX and PyTorch that still counts as parity."""
    approval: Literal["auto", "manual"] = "auto"
    """manual: a version that passes every gate waits (the flow run pauses) for a reviewer's approval."""
    approval_timeout: int = Field(3600, ge=1)
    """Seconds the flow run waits for a reviewer; then the version stays challenger."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class OnnxParity:
    """The ONNX export next to the PyTorch model: the largest logit gap, or why the export failed."""

    gap: float | None
    tolerance: float
    error: str | None = None
    """Why the export failed; None when it was written (the gap may still be too large)."""

    @property
    def passed(self) -> bool:
        return self.error is None and self.gap is not None and self.gap <= self.tolerance

    def describe(self) -> str:
        if self.error is not None:
            return f"ONNX export failed: {self.error}"
        assert self.gap is not None
        if self.passed:
            return f"ONNX matches PyTorch (max |logit| gap {self.gap:.1e} ≤ {self.tolerance:.0e})"
        return f"ONNX disagrees with PyTorch by {self.gap:.1e} on a logit (> {self.tolerance:.0e}): do not ship it"

    def as_tags(self) -> dict[str, str]:
        """The gap is recorded whatever the gate makes of it."""
        return {
            "sluice.onnx.max_abs_logit_diff": "n/a" if self.gap is None else f"{self.gap:.3e}",
            "sluice.onnx.parity": ("passed: " if self.passed else "FAILED: ") + self.describe(),
        }


@dataclass(frozen=True)
class Comparison:
    """The champion and this version scored on the same items, none of which either trained or validated on."""

    champion_version: str
    basis: str
    """"holdout" or "test": which of this version's items were compared."""
    item_ids: tuple[str, ...]
    challenger: Mapping[str, float]
    champion: Mapping[str, float]

    @property
    def items(self) -> int:
        return len(self.item_ids)

    def describe(self) -> str:
        where = "holdout items" if self.basis == HOLDOUT else "test items"
        return f"{self.items} {where} neither version trained or validated on"


@dataclass
class PromotionDecision:
    promote: bool
    checks: list[Check] = field(default_factory=list)
    champion_version: str | None = None
    compared: Comparison | None = None
    onnx: OnnxParity | None = None
    approval: Literal["auto", "manual"] = "auto"

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def awaits_review(self) -> bool:
        """Every gate passed and a reviewer must approve before `champion` moves."""
        return self.promote and self.approval == "manual"

    def summary(self) -> str:
        if self.awaits_review:
            return "every gate passed; waiting for a reviewer's approval (registry.promotion.approval: manual)"
        if self.promote:
            return "promoted to champion"
        if not self.failed:
            return "held for review (no failed check)"
        return "kept as challenger: " + "; ".join(c.detail for c in self.failed)

    def as_tags(self) -> dict[str, str]:
        """Registry version tags: the decision, every check, the compared items and the ONNX gap, in words."""
        promotion = "awaiting review" if self.awaits_review else ("champion" if self.promote else "challenger")
        tags = {"sluice.promotion": promotion, "sluice.gate_summary": self.summary()}
        for check in self.checks:
            verdict = "passed" if check.passed else "FAILED"
            tags[f"sluice.gate.{check.name}"] = f"{verdict}: {check.detail}"
        if self.compared is not None:
            versus = f"with champion v{self.compared.champion_version}"
            tags["sluice.compared_items"] = f"{self.compared.describe()} ({versus})"
        return tags | (self.onnx.as_tags() if self.onnx is not None else {})

    def to_markdown(self) -> str:
        lines = [f"**Promotion: {self.summary()}**", "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in self.checks]
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def decide_promotion(
    config: PromotionConfig,
    *,
    metrics: Mapping[str, float],
    compared: Comparison | None,
    alpha: float | None = None,
    onnx: OnnxParity | None = None,
    champion_error: str | None = None,
) -> PromotionDecision:
    """Agreement, metric floors, ONNX parity, then the champion on items neither version trained on.

    Args:
        metrics: this version's test metrics (the floors read them).
        compared: this version and the champion on the same unseen items; None when there is no champion.
        alpha: Krippendorff's alpha of the labels; None when labels came from a source column.
        champion_error: why the champion could not be compared (MLflow refused, no manifest, other classes):
            never promote then.
    """
    checks: list[Check] = []
    if config.alpha_threshold is not None and alpha is not None:
        ok = not math.isnan(alpha) and alpha >= config.alpha_threshold
        sign = "≥" if ok else "<"
        checks.append(
            Check("agreement", ok, f"Krippendorff's alpha {_fmt(alpha)} {sign} threshold {config.alpha_threshold:.3f}")
        )
    for name, floor in sorted(config.floors.items()):
        value = metrics.get(name)
        if value is None:
            checks.append(Check(f"floor.{name}", False, f"test {name} was not computed; fix register.promotion.floors"))
            continue
        ok = value >= floor
        checks.append(
            Check(
                f"floor.{name}",
                ok,
                f"test {name} {_fmt(value)} {'≥' if ok else '<'} floor {floor:.3f} (by {value - floor:+.3f})",
            )
        )
    if config.require_onnx:
        parity = onnx or OnnxParity(gap=None, tolerance=config.onnx_tolerance, error="no export was attempted")
        checks.append(Check("onnx", parity.passed, parity.describe() + " (registry.promotion.require_onnx)"))
    checks.append(_champion_check(config, compared, champion_error))
    return PromotionDecision(
        promote=all(c.passed for c in checks),
        checks=checks,
        champion_version=compared.champion_version if compared else None,
        compared=compared,
        onnx=onnx,
        approval=config.approval,
    )


def _champion_check(config: PromotionConfig, compared: Comparison | None, champion_error: str | None) -> Check:
    if champion_error is not None:
        return Check("champion", False, f"the champion could not be compared ({champion_error}); review by hand")
    if compared is None:
        if config.first_run == "promote":
            return Check("champion", True, "no champion yet; first-run policy is 'promote'")
        return Check("champion", False, "no champion yet; first-run policy is 'hold' (a reviewer promotes by hand)")
    if compared.items < config.min_compared_items:
        return Check(
            "champion",
            False,
            f"only {compared.describe()} (with champion v{compared.champion_version}); a fair comparison needs "
            f"registry.promotion.min_compared_items {config.min_compared_items}: review by hand",
        )
    mine = compared.challenger.get(config.metric, float("nan"))
    held = compared.champion.get(config.metric, float("nan"))
    gain = mine - held
    ok = not math.isnan(gain) and gain > config.margin
    return Check(
        "champion",
        ok,
        f"{config.metric} {_fmt(mine)} vs champion v{compared.champion_version} {_fmt(held)} on "
        f"{compared.describe()} ({gain:+.3f}; needs > {config.margin:+.3f})",
    )


def select_compared_items(data: pd.DataFrame, champion_manifest: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """This run's rows that neither this version nor the champion trained or validated on.

    The holdout when there is one (no version trains on it), else this version's test split; either
    way less every item the champion's manifest puts in its train or val split (a champion split
    before a reshuffle may have trained on them).

    Returns:
        ("holdout" or "test", the rows).
    """
    basis = HOLDOUT if (data[SPLIT] == HOLDOUT).any() else "test"
    seen = champion_manifest.loc[champion_manifest["split"].isin(["train", "val"]), "item_id"].astype(str)
    rows = data[(data[SPLIT] == basis) & ~data[ITEM_ID].astype(str).isin(set(seen))]
    return basis, rows.reset_index(drop=True)


def input_key(**parts: str) -> str:
    """Identity of a training's inputs: the same key means the same model would be trained again.

    Args:
        parts: every input by name: snapshot, labels, the config sections that shape training (tuning
            included), code, installed packages, the split manifest.
    """
    payload = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]
