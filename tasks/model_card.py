"""The model card: the registry version's description, everything a reviewer needs on one page."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class CardInputs:
    model_name: str
    dataset: str
    snapshot_id: str
    rows: Mapping[str, object]
    label_distribution: Mapping[str, int]
    labels_source: str
    split_strategy: str
    split_sizes: Mapping[str, int]
    split_manifest_hash: str
    leakage_passed: bool
    leakage_findings: list[str]
    expectations: Mapping[str, bool]
    metrics: Mapping[str, float]
    intervals: Mapping[str, tuple[float, float]]
    decision_markdown: str
    champion_version: str | None = None
    champion_metrics: Mapping[str, float] | None = None
    annotators: list[str] = field(default_factory=list)
    alpha: float | None = None
    export_hash: str | None = None
    training: Mapping[str, object] = field(default_factory=dict)


def _metric_rows(inputs: CardInputs) -> list[str]:
    champion = inputs.champion_metrics or {}
    who = f"champion v{inputs.champion_version}" if inputs.champion_version else "champion"
    head = f"| metric | this version | 95% CI | {who} |"
    rows = [head, "|---|---|---|---|"]
    for key, value in inputs.metrics.items():
        interval = inputs.intervals.get(key)
        ci = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        held = champion.get(key)
        rows.append(f"| {key} | {value:.4f} | {ci} | {'' if held is None else f'{held:.4f}'} |")
    return rows


def build_model_card(inputs: CardInputs) -> str:
    """Markdown: data, labels, split and leakage, test metrics beside the champion's, and the gate's decision."""
    distribution = ", ".join(f"{label}: {count}" for label, count in inputs.label_distribution.items())
    quarantined = inputs.rows.get("quarantined") or {}
    lines = [
        f"# {inputs.model_name} — model card",
        "",
        "## Data",
        f"- dataset `{inputs.dataset}`, snapshot `{inputs.snapshot_id}`",
        f"- rows in {inputs.rows.get('rows_in')}, kept for training {inputs.rows.get('trainable')}, "
        f"awaiting labels {inputs.rows.get('awaiting')}, quarantined {inputs.rows.get('quarantined_total')} "
        f"({', '.join(f'{k} {v}' for k, v in quarantined.items()) or 'none'})",  # type: ignore[attr-defined]
        f"- label distribution: {distribution}",
        "- expectation suites: "
        + (", ".join(f"{name} {'passed' if ok else 'FAILED'}" for name, ok in inputs.expectations.items()) or "none"),
        "",
        "## Labels",
        f"- source: {inputs.labels_source}",
    ]
    if inputs.alpha is not None:
        lines.append(f"- Krippendorff's alpha: {inputs.alpha:.3f}")
    if inputs.annotators:
        lines.append(f"- annotators: {', '.join(inputs.annotators)}")
    if inputs.export_hash:
        lines.append(f"- Label Studio export sha256: `{inputs.export_hash[:16]}…`")
    lines += [
        "",
        "## Split and leakage",
        f"- strategy: {inputs.split_strategy}; sizes: "
        + ", ".join(f"{name} {size}" for name, size in inputs.split_sizes.items()),
        f"- manifest sha256: `{inputs.split_manifest_hash[:16]}…`",
        f"- leakage report: {'clean' if inputs.leakage_passed else 'FAILED'}",
    ]
    lines += [f"  - {finding}" for finding in inputs.leakage_findings]
    lines += ["", "## Test metrics (test split used once)", "", *_metric_rows(inputs)]
    if inputs.training:
        lines += ["", "## Training", ""]
        lines += [f"- {key}: {value}" for key, value in inputs.training.items()]
    lines += ["", "## Promotion gate", "", inputs.decision_markdown]
    return "\n".join(lines)
