"""What a finished run registers: the report files, the model card and the MLflow record, built as data.

Pure: `build_registration` reads the stages' outcomes and returns the files to write and the record that
`sluice.tracking` turns into an MLflow run and model version; `write_reports` and `copy_split_files`
put the files on disk.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tasks.columns import LABEL, SPLIT
from tasks.labels import LabelOutcome
from tasks.leakage import LeakageReport
from tasks.model_card import CardInputs, build_model_card
from tasks.partition import SplitOutcome, assignment_pointer
from tasks.promotion import OnnxParity, PromotionDecision
from tasks.report import RowAccount, TestReport
from tasks.telemetry import telemetry_metrics
from tasks.train import TrainConfig, TrainResult
from tasks.tune import CVResult
from tasks.validate import ValidationOutcome

if TYPE_CHECKING:  # the annotation outcome is a plain dataclass of the annotation flow
    from flows.annotate import AnnotationOutcome
    from sluice.config import PipelineConfig


@dataclass(kw_only=True)
class RunRecord:
    """What the registration of any run records, whichever kind of model it trained (`RunOutcome` for a
    classifier, `tasks.generation_run.GenerationRun` for a generator)."""

    config: PipelineConfig
    snapshot_id: str
    snapshot_path: Path
    run_dir: Path
    account: RowAccount
    quarantine_path: Path
    suites: list[ValidationOutcome]
    split: SplitOutcome
    assignment_path: Path
    """The carried-forward split assignment this run wrote (its stem is the assignment's hash)."""
    leakage: LeakageReport
    decision: PromotionDecision
    input_key: str
    """The idempotency key: a rerun with the same inputs reports this version instead of training."""
    code_version: str
    # Filled by the flow at registration: where the run came from and where its artifacts go.
    git_commit: str = "unknown"
    flow_run_id: str = ""
    flow_run_url: str = ""
    artifacts_dir: Path | None = None
    """None when the MLflow server keeps the artifacts (an http tracking URI)."""
    registration_key: str = ""
    """One registration per flow run and inputs: a retry resumes the same MLflow run."""

    @property
    def reports_dir(self) -> Path:
        return self.run_dir / "reports"

    @property
    def split_dir(self) -> Path:
        return self.run_dir / "split"


@dataclass(kw_only=True)
class RunOutcome(RunRecord):
    """Everything the stages of a classifier's run produced that its registration records."""

    labelled: LabelOutcome
    annotated: AnnotationOutcome | None
    frames: dict[str, pd.DataFrame]
    train_config: TrainConfig
    trained: TrainResult
    tested: TestReport
    onnx: OnnxParity
    trials: list[dict[str, Any]] = field(default_factory=list)
    cv: CVResult | None = None
    audit: dict[str, float | int] = field(default_factory=dict)
    """Test metrics on the test items whose consensus quality is at least `audit_min_quality`."""
    audit_min_quality: float = 0.0

    @property
    def predictor_dir(self) -> Path:
        return self.run_dir / "predictor"


@dataclass
class Registration:
    """The files a run writes under `reports/` (name -> text) and the record for MLflow."""

    reports: dict[str, str]
    record: dict[str, Any]

    @property
    def model_card(self) -> str:
        return self.reports["model_card.md"]


def build_registration(run: RunOutcome) -> Registration:
    """The report files, the model card and the MLflow record of a finished run."""
    card = build_model_card(build_card_inputs(run))
    decision = run.decision
    reports = {
        "leakage_report.md": run.leakage.to_markdown(),
        "leakage_report.json": json.dumps(run.leakage.to_dict(), indent=2),
        "expectations.json": json.dumps([o.to_dict() for o in run.suites], indent=2),
        "promotion.md": decision.to_markdown(),
    }
    if decision.compared is not None:
        ids = pd.DataFrame({"item_id": list(decision.compared.item_ids)})
        reports["compared_items.csv"] = ids.assign(basis=decision.compared.basis).to_csv(index=False)
    reports["model_card.md"] = card
    return Registration(reports=reports, record=_record(run, card))


def write_reports(registration: Registration, folder: Path) -> Path:
    """Write the report files into `folder` (made when missing); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in registration.reports.items():
        (folder / name).write_text(text)
    return folder


def copy_split_files(run: RunOutcome) -> Path:
    """This run's manifest and the carried-forward assignment, as the version's `split/` artifacts."""
    folder = run.split_dir
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.split.manifest_path, folder / "manifest.parquet")
    shutil.copyfile(run.assignment_path, folder / "assignment.parquet")
    pointer = assignment_pointer(run.split.manifest_path.parent, str(run.split.dataset))
    if pointer.is_file():
        shutil.copyfile(pointer, folder / "assignment.json")
    return folder


def run_tags(run: RunOutcome) -> dict[str, str]:
    """The run's lineage as MLflow tags: data, split and assignment, holdout, gates, code, device, flow run."""
    split, suites = run.split, run.suites
    holdout = split.sizes().get("holdout")
    tags = {
        "sluice.dataset": run.config.name,
        "sluice.snapshot_id": run.snapshot_id,
        "sluice.split_manifest_hash": split.manifest_hash,
        "sluice.split_sizes": ", ".join(f"{k}={v}" for k, v in split.sizes().items()),
        "sluice.split_assignment": run.assignment_path.stem,
        "sluice.split_assignment_parent": split.parent.digest[:16] if split.parent else "none",
        "sluice.split_reshuffled": str(split.reshuffled).lower(),
        "sluice.holdout": f"{holdout} items ({split.holdout_source})" if holdout else "none",
        "sluice.expectations_success": str(all(o.success for o in suites)),
        "sluice.expectation_suites": ", ".join(o.suite for o in suites),
        "sluice.leakage_passed": str(run.leakage.passed),
        "sluice.labels_source": run.labelled.source,
        "sluice.input_key": run.input_key,
        "sluice.git_commit": run.git_commit,
        "sluice.code_version": run.code_version,
        "sluice.device": run.trained.device,
        "prefect.flow_run_id": run.flow_run_id,
        "prefect.flow_run_url": run.flow_run_url,
    }
    annotated = run.annotated
    if annotated is not None and annotated.report is not None:
        tags |= {
            "sluice.labelstudio_project_id": str(annotated.project_id),
            "sluice.labelstudio_export_sha256": annotated.export_sha256,
            "sluice.krippendorff_alpha": f"{annotated.report.alpha:.4f}",
            "sluice.noisiest_annotator": str(annotated.noisiest),
        }
    return tags


def agreement_metrics(annotated: AnnotationOutcome | None) -> dict[str, float]:
    """Agreement, coverage, per-annotator kappa and telemetry as MLflow metrics; empty without annotation."""
    if annotated is None or annotated.report is None:
        return {}
    metrics = {"agreement_alpha": annotated.report.alpha, "annotation_coverage": annotated.coverage}
    if annotated.report.fleiss is not None:
        metrics["agreement_fleiss_kappa"] = annotated.report.fleiss
    for row in annotated.report.per_annotator.itertuples():
        # Annotators are e-mail addresses; MLflow metric names allow no "@".
        metrics[f"agreement_kappa_{re.sub(r'[^A-Za-z0-9_.-]', '_', str(row.annotator))}"] = float(str(row.kappa))
    if annotated.telemetry is not None:
        metrics |= telemetry_metrics(annotated.telemetry)
        metrics["annotators_excluded"] = float(len(annotated.excluded))
    return metrics


def cv_metrics(cv: CVResult | None) -> dict[str, float]:
    """Cross-validation means and standard deviations as MLflow metrics; empty without it."""
    if cv is None:
        return {}
    return {f"cv_{k}_mean": v for k, v in cv.mean.items()} | {f"cv_{k}_std": v for k, v in cv.std.items()}


def build_card_inputs(run: RunOutcome) -> CardInputs:
    """What the model card (and the reviewer's summary) say about a run."""
    annotated, report = run.annotated, run.annotated.report if run.annotated else None
    split = run.split
    return CardInputs(
        model_name=run.config.registry.model_name,
        dataset=run.config.name,
        snapshot_id=run.snapshot_id,
        rows=run.account.to_dict(),
        label_distribution=run.labelled.distribution(),
        labels_source=run.labelled.source,
        annotators=sorted(report.per_annotator["annotator"]) if report is not None else [],
        alpha=report.alpha if report is not None else None,
        export_hash=annotated.export_sha256 if annotated else None,
        split_strategy=split.settings.strategy,
        split_sizes=split.sizes(),
        split_manifest_hash=split.manifest_hash,
        split_assignment=split.describe_assignment(),
        assignment_hash=run.assignment_path.stem,
        reshuffled=split.reshuffled,
        leakage_passed=run.leakage.passed,
        leakage_findings=[f"{c.name}: {c.summary}" for c in run.leakage.checks if not c.skipped],
        expectations={o.suite: o.success for o in run.suites},
        metrics=run.tested.headline(),
        intervals=run.tested.intervals,
        decision_markdown=run.decision.to_markdown(),
        compared=run.decision.compared,
        onnx=run.onnx.describe(),
        training={
            "architecture": run.config.train.architecture,
            "best epoch": run.trained.best_epoch,
            "device": run.trained.device,
            "precision": run.trained.precision,
        },
        labelling=annotated.figures if annotated else {},
        label_audit=run.audit,
        audit_min_quality=run.audit_min_quality,
    )


def _agreement_files(annotated: AnnotationOutcome | None) -> list[Path]:
    if annotated is None or annotated.report is None:
        return []
    files = [annotated.folder / "agreement.md", annotated.folder / "agreement_per_annotator.csv", annotated.export_path]
    files += [annotated.heatmap] if annotated.heatmap else []
    if annotated.telemetry_plot is not None:
        files += [annotated.telemetry_plot, annotated.folder / "annotator_telemetry.csv"]
    return files


def _metrics(run: RunOutcome) -> dict[str, float]:
    trained, onnx = run.trained, run.onnx
    return (
        {f"test_{k}": v for k, v in run.tested.metrics.items()}
        | {"best_epoch": float(trained.best_epoch), "train_samples_per_second": trained.samples_per_second}
        | agreement_metrics(run.annotated)
        | cv_metrics(run.cv)
        | ({"onnx_max_abs_logit_diff": onnx.gap} if onnx.gap is not None else {})
    )


def _record(run: RunOutcome, card: str) -> dict[str, Any]:
    config, trained, split = run.config, run.trained, run.split
    tags = run_tags(run)
    holdout = split.holdout_rows()
    datasets = {**run.frames, **({"holdout": holdout} if len(holdout) else {})}
    # A failed parity check says "do not ship": the ONNX file stays in the run folder, not in the registry.
    onnx = [run.run_dir / "onnx"] if run.onnx.passed else []
    artifacts = [run.reports_dir, run.split_dir, run.quarantine_path, *_agreement_files(run.annotated), *onnx]
    return {
        "experiment": config.registry.experiment or config.name,
        "artifacts_dir": run.artifacts_dir,
        "run_name": f"{config.name}-{run.snapshot_id[:8]}",
        "params": config.flat_params()
        | {f"train.{k}": str(v) for k, v in run.train_config.model_dump(mode="json").items()},
        "tags": tags,
        "history": trained.history,
        "metrics": _metrics(run),
        "children": [
            {"name": f"trial-{n}", "params": t["params"], "metrics": t["metrics"]} for n, t in enumerate(run.trials)
        ],
        "datasets": {
            name: (frame.drop(columns=[SPLIT]), str(run.snapshot_path), LABEL) for name, frame in datasets.items()
        },
        "artifacts": artifacts,
        "predictor_dir": run.predictor_dir,
        "input_example": run.frames["test"][trained.predictor.input_columns].head(3).reset_index(drop=True),
        "output_example": run.tested.output_example,
        "model_name": config.registry.model_name,
        "version_tags": {k: v for k, v in tags.items() if k.startswith("sluice.")},
        "description": card,
        # Manual approval: the version waits as challenger; the reviewer's answer moves `champion`.
        "promote": run.decision.promote and not run.decision.awaits_review,
        "decision_tags": run.decision.as_tags(),
        "registration_key": run.registration_key,
    }
