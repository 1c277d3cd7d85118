"""The promotion gate: may a new model version become `champion`? Every check says why, in plain words."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PromotionConfig(BaseModel):
    """When a new version may take the `champion` alias."""

    model_config = ConfigDict(extra="forbid")

    metric: str = "f1_macro"
    """The test metric that compares challenger and champion (higher is better)."""
    floors: dict[str, float] = Field(default_factory=lambda: {"accuracy": 0.6})
    """Absolute minimums on test metrics."""
    margin: float = 0.0
    """How much the challenger must beat the champion by on `metric`, both scored on the same test set."""
    first_run: Literal["promote", "hold"] = "promote"
    """With no champion yet: promote a version that passes every other gate, or hold it for human review."""
    alpha_threshold: float = 0.667
    """Krippendorff's alpha the labels must reach (when they came from annotation)."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class DataGates:
    expectations_passed: bool
    suites: list[str]
    leakage_passed: bool
    alpha: float | None = None
    """Krippendorff's alpha of the labels; None when labels came from a source column."""


@dataclass
class PromotionDecision:
    promote: bool
    checks: list[Check] = field(default_factory=list)
    champion_version: str | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if self.promote:
            head = "promoted to champion"
        elif not self.failed:
            head = "held for review (no failed check)"
        else:
            head = "kept as challenger: " + "; ".join(c.detail for c in self.failed)
        return head

    def as_tags(self) -> dict[str, str]:
        """Registry version tags: the decision and every check, in words."""
        tags = {
            "sluice.promotion": "champion" if self.promote else "challenger",
            "sluice.gate_summary": self.summary(),
        }
        for check in self.checks:
            verdict = "passed" if check.passed else "FAILED"
            tags[f"sluice.gate.{check.name}"] = f"{verdict}: {check.detail}"
        return tags

    def to_markdown(self) -> str:
        lines = [f"**Promotion: {self.summary()}**", "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in self.checks]
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.3f}"


def decide_promotion(
    config: PromotionConfig,
    *,
    gates: DataGates,
    metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    champion_version: str | None = None,
    champion_error: str | None = None,
) -> PromotionDecision:
    """Data gates, metric floors, then the comparison with the champion on the same test set.

    Args:
        champion_metrics: the champion's test metrics on this version's test set; None when there is no champion.
        champion_error: why the champion could not be scored (MLflow unreachable, other classes): never promote then.
    """
    checks: list[Check] = [
        Check(
            "expectations",
            gates.expectations_passed,
            f"expectation suites {', '.join(gates.suites) or '(none)'} "
            + ("passed" if gates.expectations_passed else "failed"),
        ),
        Check(
            "leakage",
            gates.leakage_passed,
            "leakage report clean" if gates.leakage_passed else "leakage report failed a hard check",
        ),
    ]
    if gates.alpha is not None:
        ok = not math.isnan(gates.alpha) and gates.alpha >= config.alpha_threshold
        checks.append(
            Check(
                "agreement",
                ok,
                f"Krippendorff's alpha {_fmt(gates.alpha)} {'≥' if ok else '<'} threshold {config.alpha_threshold:.3f}",
            )
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
    challenger = metrics.get(config.metric, float("nan"))
    if champion_error is not None:
        checks.append(Check("champion", False, f"the champion could not be scored ({champion_error}); review by hand"))
    elif champion_metrics is None:
        first_ok = config.first_run == "promote"
        checks.append(
            Check(
                "champion",
                first_ok,
                "no champion yet; first-run policy is 'promote'"
                if first_ok
                else "no champion yet; first-run policy is 'hold' (a reviewer promotes by hand)",
            )
        )
    else:
        held = champion_metrics.get(config.metric, float("nan"))
        gain = challenger - held
        ok = not math.isnan(gain) and gain > config.margin
        checks.append(
            Check(
                "champion",
                ok,
                f"{config.metric} {_fmt(challenger)} vs champion v{champion_version} {_fmt(held)} "
                f"on the same test set ({gain:+.3f}; needs > {config.margin:+.3f})",
            )
        )
    return PromotionDecision(promote=all(c.passed for c in checks), checks=checks, champion_version=champion_version)


def input_key(*, snapshot_id: str, labels_hash: str, config_hash: str, code_version: str) -> str:
    """Identity of a training's inputs: the same key means the same model would be trained again."""
    payload = json.dumps(
        {"snapshot": snapshot_id, "labels": labels_hash, "config": config_hash, "code": code_version},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]
