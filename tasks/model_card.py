"""The model card: the registry version's description, everything a reviewer needs on one page."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tasks.promotion import Comparison


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
    split_assignment: str = ""
    """Where the split came from: carried forward, first, or reshuffled (tasks.partition)."""
    assignment_hash: str | None = None
    reshuffled: bool = False
    compared: Comparison | None = None
    onnx: str | None = None
    annotators: list[str] = field(default_factory=list)
    alpha: float | None = None
    export_hash: str | None = None
    training: Mapping[str, object] = field(default_factory=dict)
    labelling: Mapping[str, object] = field(default_factory=dict)
    """tasks.label_quality.measure_labelling; `trained_labels_right` only where reference labels exist (the demo)."""
    label_audit: Mapping[str, float | int] = field(default_factory=dict)
    """Test metrics on the test items whose consensus quality is high (tasks.label_quality.audit_test_metrics)."""
    audit_min_quality: float = 0.0


def _metric_rows(inputs: CardInputs) -> list[str]:
    rows = ["| metric | this version | 95% CI |", "|---|---|---|"]
    for key, value in inputs.metrics.items():
        interval = inputs.intervals.get(key)
        ci = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        rows.append(f"| {key} | {value:.4f} | {ci} |")
    return rows


def comparison_rows(compared: Comparison, metrics: list[str]) -> list[str]:
    """This version beside the champion on the items neither trained or validated on."""
    rows = [
        f"On {compared.describe()}:",
        "",
        f"| metric | this version | champion v{compared.champion_version} |",
        "|---|---|---|",
    ]
    for key in metrics:
        mine, theirs = compared.challenger.get(key), compared.champion.get(key)
        if mine is not None and theirs is not None:
            rows.append(f"| {key} | {mine:.4f} | {theirs:.4f} |")
    return rows


def _reshuffle_banner() -> list[str]:
    return [
        "> **⚠ SPLIT RESHUFFLED** (`split.reshuffle: true`): train, val and test were drawn afresh instead of "
        "carrying the earlier assignment forward. Items earlier versions trained on may sit in this version's "
        "test split: its test metrics cannot be compared with theirs. Only the frozen holdout, or items neither "
        "version trained on (the comparison below), compare fairly.",
        "",
    ]


def build_model_card(inputs: CardInputs) -> str:
    """Markdown: data, labels, split and leakage, test metrics, the champion comparison, and the gate's decision."""
    distribution = ", ".join(f"{label}: {count}" for label, count in inputs.label_distribution.items())
    quarantined = inputs.rows.get("quarantined") or {}
    lines = [f"# {inputs.model_name} — model card", ""]
    if inputs.reshuffled:
        lines += _reshuffle_banner()
    lines += [
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
    ]
    if inputs.split_assignment:
        digest = f" (assignment `{inputs.assignment_hash[:16]}…`)" if inputs.assignment_hash else ""
        lines.append(f"- assignment: {inputs.split_assignment}{digest}")
    lines.append(f"- leakage report: {'clean' if inputs.leakage_passed else 'FAILED'}")
    lines += [f"  - {finding}" for finding in inputs.leakage_findings]
    lines += ["", "## Test metrics (test split used once)", "", *_metric_rows(inputs)]
    if inputs.compared is not None:
        lines += ["", "## Against the champion", "", *comparison_rows(inputs.compared, list(inputs.metrics))]
    lines += _label_quality_rows(inputs)
    if inputs.training or inputs.onnx:
        lines += ["", "## Training", ""]
        lines += [f"- {key}: {value}" for key, value in inputs.training.items()]
        lines += [f"- ONNX: {inputs.onnx}"] if inputs.onnx else []
    lines += ["", "## Promotion gate", "", inputs.decision_markdown]
    return "\n".join(lines)


def review_summary(inputs: CardInputs, *, version: str, model_link: str) -> str:
    """What a reviewer reads on the paused flow run: the card's summary, the gate results, where the rest is."""
    lines = [f"## Review {inputs.model_name} version {version}", ""]
    if inputs.reshuffled:
        lines += _reshuffle_banner()
    lines += [
        "Every gate passed. **approve** makes this version `champion`; **reject** takes its aliases away. "
        "The reason and your name are stored on the version (`sluice.review.*`).",
        "",
        f"- data: `{inputs.dataset}`, snapshot `{inputs.snapshot_id[:12]}`; split "
        + ", ".join(f"{name} {size}" for name, size in inputs.split_sizes.items()),
        f"- split: {inputs.split_assignment}" if inputs.split_assignment else "",
        f"- full model card: {model_link}",
        "",
        "### Test metrics",
        "",
        *_metric_rows(inputs),
    ]
    if inputs.compared is not None:
        lines += ["", "### Against the champion", "", *comparison_rows(inputs.compared, list(inputs.metrics))]
    lines += ["", "### Gates", "", inputs.decision_markdown]
    return "\n".join(lines)


def _label_quality_rows(inputs: CardInputs) -> list[str]:
    """The labelling figures and the test-set label audit (metrics on all test items vs the high-quality ones)."""
    lines: list[str] = []
    fig = inputs.labelling
    if fig:
        right = fig.get("trained_labels_right")
        lines += [
            "",
            "## Labelling",
            "",
            f"- items people labelled: {fig.get('items_labelled')}; trained on: {_pct(fig.get('trained_share'))}; "
            f"sent to review: {_pct(fig.get('review_share'))}; annotations per item: {fig.get('annotations_per_item')}",
            "- trained-on labels right: "
            + (
                "unknown (no reference labels)"
                if right is None
                else f"{_pct(right)} (against the simulator's held-back labels)"
            ),
        ]
    audit = inputs.label_audit
    if audit:
        lines += ["", f"## Test-set label audit (consensus quality ≥ {inputs.audit_min_quality:.2f})", ""]
        lines += ["| metric | all test items | high-quality test items |", "|---|---|---|"]
        lines.append(f"| rows | {inputs.split_sizes.get('test', '')} | {audit.get('rows', 0)} |")
        for key in ("accuracy", "f1_macro"):
            if key in audit and key in inputs.metrics:
                lines.append(f"| {key} | {inputs.metrics[key]:.4f} | {float(audit[key]):.4f} |")
    return lines


def _pct(value: object) -> str:
    return "-" if value is None else f"{float(str(value)):.1%}"
