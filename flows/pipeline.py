"""The whole pipeline as one Prefect flow, stage after stage, from raw files to a registered model."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, runtime

from flows import steps
from flows.annotate import AnnotationOutcome, annotate_items
from flows.review import request_review
from sluice import fingerprint, tracking
from sluice.config import PipelineConfig, load_config
from sluice.home import Home
from tasks.columns import ITEM_ID, LABEL, SPLIT
from tasks.labels import LabelOutcome
from tasks.leakage import LeakageReport
from tasks.model_card import CardInputs, build_model_card, review_summary
from tasks.partition import SplitOutcome, assignment_pointer, write_gap_rows
from tasks.promotion import Comparison, PromotionDecision, decide_promotion, input_key
from tasks.quarantine import concat_quarantine, write_quarantine
from tasks.report import account_rows
from tasks.telemetry import telemetry_metrics
from tasks.tune import CVResult


def _git_commit(base_dir: Path) -> str:
    """The git commit, marked `-dirty` when the work tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=base_dir, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=base_dir,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = head.stdout.strip() or "unknown"
    return f"{commit}-dirty" if dirty.stdout.strip() else commit


def _labels_hash(labelled: LabelOutcome) -> str:
    pairs = labelled.data[[ITEM_ID, LABEL]].sort_values(ITEM_ID).to_csv(index=False)
    return hashlib.sha256(pairs.encode()).hexdigest()[:16]


def _run_dir(home: Home, config: PipelineConfig) -> Path:
    path = home.runs / config.name / str(runtime.flow_run.id or "local")
    (path / "reports").mkdir(parents=True, exist_ok=True)
    return path


def _agreement_metrics(annotated: AnnotationOutcome | None) -> dict[str, float]:
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


def _cv_metrics(cv: CVResult | None) -> dict[str, float]:
    if cv is None:
        return {}
    return {f"cv_{k}_mean": v for k, v in cv.mean.items()} | {f"cv_{k}_std": v for k, v in cv.std.items()}


@flow(name="sluice-pipeline", log_prints=False, on_failure=[steps.report_failure])
def pipeline(config_path: str = "configs/rotten_tomatoes.yaml", home: str | None = None) -> dict[str, Any]:
    """Raw files to a registered MLflow model version, one stage after another."""
    logger = get_run_logger()
    config = load_config(config_path)
    where = Home.resolve(home)
    run_dir = _run_dir(where, config)
    tracking_uri = tracking.resolve_tracking_uri(config.registry.tracking_uri, where.mlflow_tracking_uri)

    # --- demo data (bundled real data written under the home) -------------------------------------
    if config.demo is not None:
        steps.prepare_demo_data(config, where)

    # --- ingest ------------------------------------------------------------------------------------
    snapshot = steps.ingest(config, where)
    steps.name_run(config.name, snapshot.snapshot_id)
    logger.info("snapshot %s: %d rows, %d quarantined", snapshot.snapshot_id, snapshot.rows, snapshot.quarantined)

    # --- raw expectations --------------------------------------------------------------------------
    raw, raw_outcome = steps.validate_raw(config, where, snapshot)

    # --- clean -------------------------------------------------------------------------------------
    cleaned = steps.clean(config, raw)

    # --- clean expectations: the gate ----------------------------------------------------------------
    gated, clean_outcome = steps.validate_clean(config, where, cleaned.data, snapshot.snapshot_id)

    # --- annotation: Label Studio, agreement gate, consensus (labels.source: annotation) ------------------
    annotated = (
        annotate_items(config, where, gated, tracking_uri=tracking_uri)
        if config.labels.source == "annotation"
        else None
    )

    # --- labels ------------------------------------------------------------------------------------
    labelled = steps.resolve_labels(config, gated, annotated.consensus_frame() if annotated else None)

    # --- account for every row, by item id (written now, so a run the split gate stops keeps it) --------
    suites = [o for o in (raw_outcome, clean_outcome) if o is not None]
    snapshot_ids = snapshot.load_item_ids()
    quarantine = concat_quarantine(
        [snapshot.load_quarantine(), *(o.quarantine for o in suites), cleaned.quarantine, labelled.quarantine]
    )
    quarantine_path = write_quarantine(quarantine, steps.quarantine_file(where, snapshot.snapshot_id))
    account = account_rows(
        snapshot_ids,
        quarantine=quarantine,
        awaiting=labelled.awaiting[ITEM_ID],
        trainable={"labelled": labelled.data[ITEM_ID]},
    )

    summary: dict[str, Any] = {
        "config": str(config.path),
        "home": str(where.root),
        "snapshot_id": snapshot.snapshot_id,
        "rows": account.to_dict(),
        "quarantine_path": str(quarantine_path),
        "expectations": [
            {
                "suite": o.suite,
                "success": o.success,
                "passed": [e.label for e in o.passed],
                "failed": [e.label for e in o.expectations if not e.success],
                "data_docs": o.data_docs,
            }
            for o in suites
        ],
        "run_dir": str(run_dir),
        "flow_run_id": str(runtime.flow_run.id),
        "tracking_uri": tracking_uri,
        "annotation": annotated.summary() if annotated else None,
    }
    if annotated is not None and annotated.status == "waiting":
        logger.info("annotation coverage %.1f%%: waiting for annotators, nothing trained", 100 * annotated.coverage)
        return summary | {"status": "waiting"}

    # --- split + leakage gate (assigned items keep their split; the holdout stays frozen) -------------
    split, leakage = steps.split(config, where, labelled.data)
    assignment_path = steps.carry_assignment(config, split, steps.split_inputs(config, labelled.data))
    frames = split.frames()

    # --- account again, through the split: copies quarantined, gap rows kept in their own file ---------
    quarantine = concat_quarantine([quarantine, split.quarantine])
    write_quarantine(quarantine, quarantine_path)
    gap = split.gap_rows()
    gap_path = write_gap_rows(gap, steps.gap_file(where, snapshot.snapshot_id))
    account = account_rows(
        snapshot_ids,
        quarantine=quarantine,
        awaiting=labelled.awaiting[ITEM_ID],
        trainable={name: frame[ITEM_ID] for name, frame in frames.items()},
        gap=gap[ITEM_ID],
        holdout=split.holdout_rows()[ITEM_ID],
    )

    summary |= {
        "rows": account.to_dict(),
        "gap_path": str(gap_path) if gap_path else None,
        "split_sizes": split.sizes(),
        "split_manifest_hash": split.manifest_hash,
        "split_assignment": split.describe_assignment(),
    }

    # --- identical inputs: report the existing version, train nothing ----------------------------------
    code_version = fingerprint.code_version()
    key = training_key(
        config,
        snapshot_id=snapshot.snapshot_id,
        labels=_labels_hash(labelled),
        code=code_version,
        split_manifest=split.manifest_hash,
    )
    existing = steps.find_existing(config, tracking_uri, key)
    if existing is not None:
        logger.info("identical inputs already produced %s v%s", existing.model_name, existing.version)
        return summary | _existing_summary(existing)

    # --- tune (optional): a grid or Optuna search on the validation split --------------------------------
    train_config, trials = config.train, list[dict[str, Any]]()
    if config.tuning.method != "none":
        train_config, trials = steps.tune(config, frames)

    # --- cross-validate (optional): group-aware folds over the train rows ----------------------------------
    cv = steps.cross_validate(config, train_config, split.data) if config.tuning.cross_validate else None

    # --- train: the chosen configuration, once more on train, early-stopped on val ----------------------------
    trained = steps.train(config, train_config, frames, run_dir, where.checkpoints / key)

    # --- test (once) -------------------------------------------------------------------------------
    tested = steps.test(config, trained, frames["test"], run_dir)
    quality = annotated.consensus.quality if annotated and annotated.consensus else None
    audit = steps.audit_test(config, trained, frames["test"], quality) if quality is not None else {}

    # --- promotion gate: floors, ONNX parity, the champion on items neither version trained on ----------
    onnx = steps.export_onnx(config, trained, frames["test"].head(256), run_dir / "onnx" / "model.onnx")
    champion = steps.find_champion(config, tracking_uri, where, run_dir)
    compared = (
        steps.compare_with_champion(config, tracking_uri, champion, split, trained)
        if isinstance(champion, tuple)
        else champion
    )
    decision = decide_promotion(
        config.registry.promotion,
        metrics=tested.metrics,
        compared=compared if isinstance(compared, Comparison) else None,
        alpha=annotated.report.alpha if annotated and annotated.report else None,
        onnx=onnx,
        champion_error=compared if isinstance(compared, str) else None,
    )

    # --- register ----------------------------------------------------------------------------------
    predictor_dir = run_dir / "predictor"
    trained.predictor.save(predictor_dir)
    reports = _write_reports(run_dir, leakage=leakage, suites=suites, decision=decision)
    split_dir = _copy_split_files(run_dir, split, assignment_path)
    tags = _run_tags(config, snapshot.snapshot_id, split, assignment_path, leakage.passed, suites) | {
        "sluice.labels_source": labelled.source,
        "sluice.input_key": key,
        "sluice.git_commit": _git_commit(config.base_dir),
        "sluice.code_version": code_version,
        "sluice.device": trained.device,
        "prefect.flow_run_id": str(runtime.flow_run.id),
        "prefect.flow_run_url": str(runtime.flow_run.ui_url or ""),
    }
    agreement_files: list[Path] = []
    if annotated is not None and annotated.report is not None:
        tags |= {
            "sluice.labelstudio_project_id": str(annotated.project_id),
            "sluice.labelstudio_export_sha256": annotated.export_sha256,
            "sluice.krippendorff_alpha": f"{annotated.report.alpha:.4f}",
            "sluice.noisiest_annotator": str(annotated.noisiest),
        }
        agreement_files = [
            annotated.folder / "agreement.md",
            annotated.folder / "agreement_per_annotator.csv",
            annotated.export_path,
        ]
        agreement_files += [annotated.heatmap] if annotated.heatmap else []
        if annotated.telemetry_plot is not None:
            agreement_files += [annotated.telemetry_plot, annotated.folder / "annotator_telemetry.csv"]
    card_inputs = CardInputs(
        model_name=config.registry.model_name,
        dataset=config.name,
        snapshot_id=snapshot.snapshot_id,
        rows=account.to_dict(),
        label_distribution=labelled.distribution(),
        labels_source=labelled.source,
        annotators=sorted(annotated.report.per_annotator["annotator"]) if annotated and annotated.report else [],
        alpha=annotated.report.alpha if annotated and annotated.report else None,
        export_hash=annotated.export_sha256 if annotated else None,
        split_strategy=split.settings.strategy,
        split_sizes=split.sizes(),
        split_manifest_hash=split.manifest_hash,
        split_assignment=split.describe_assignment(),
        assignment_hash=tags["sluice.split_assignment"],
        reshuffled=split.reshuffled,
        leakage_passed=leakage.passed,
        leakage_findings=[f"{c.name}: {c.summary}" for c in leakage.checks if not c.skipped],
        expectations={o.suite: o.success for o in suites},
        metrics=tested.headline(),
        intervals=tested.intervals,
        decision_markdown=decision.to_markdown(),
        compared=decision.compared,
        onnx=onnx.describe(),
        training={
            "architecture": config.train.architecture,
            "best epoch": trained.best_epoch,
            "device": trained.device,
            "precision": trained.precision,
        },
        labelling=annotated.figures if annotated else {},
        label_audit=audit,
        audit_min_quality=steps.AUDIT_MIN_QUALITY,
    )
    card = build_model_card(card_inputs)
    (reports / "model_card.md").write_text(card)
    datasets = {**frames, **({"holdout": split.holdout_rows()} if len(split.holdout_rows()) else {})}
    record = {
        "experiment": config.registry.experiment or config.name,
        # A database store keeps artifacts under the home; an MLflow server (http) has its own artifact store.
        "artifacts_dir": None if tracking_uri.startswith(("http://", "https://")) else where.mlflow_artifacts,
        "run_name": f"{config.name}-{snapshot.snapshot_id[:8]}",
        "params": config.flat_params()
        | {f"train.{k}": str(v) for k, v in train_config.model_dump(mode="json").items()},
        "tags": tags,
        "history": trained.history,
        "metrics": {f"test_{k}": v for k, v in tested.metrics.items()}
        | {"best_epoch": float(trained.best_epoch), "train_samples_per_second": trained.samples_per_second}
        | _agreement_metrics(annotated)
        | _cv_metrics(cv)
        | ({"onnx_max_abs_logit_diff": onnx.gap} if onnx.gap is not None else {}),
        "children": [
            {"name": f"trial-{n}", "params": t["params"], "metrics": t["metrics"]} for n, t in enumerate(trials)
        ],
        "datasets": {
            name: (frame.drop(columns=[SPLIT]), str(snapshot.data_path), LABEL) for name, frame in datasets.items()
        },
        # A failed parity check says "do not ship": the ONNX file stays in the run folder, not in the registry.
        "artifacts": [reports, split_dir, quarantine_path, *agreement_files]
        + ([run_dir / "onnx"] if onnx.passed else []),
        "predictor_dir": predictor_dir,
        "input_example": frames["test"][trained.predictor.input_columns].head(3).reset_index(drop=True),
        "output_example": tested.output_example,
        "model_name": config.registry.model_name,
        "version_tags": {k: v for k, v in tags.items() if k.startswith("sluice.")},
        "description": card,
        # Manual approval: the version waits as challenger; the reviewer's answer moves `champion`.
        "promote": decision.promote and not decision.awaits_review,
        "decision_tags": decision.as_tags(),
        # One registration per flow run and inputs: a retry resumes the same MLflow run.
        "registration_key": fingerprint.combine("register", key, str(runtime.flow_run.id or run_dir)),
    }
    # Kept on disk first: when MLflow is down the run can be registered later with `sluice register`.
    tracking.write_pending(record, run_dir / "pending", tracking_uri=tracking_uri)
    version = steps.register(config, tracking_uri, record)
    (run_dir / "pending" / "pending_registration.json").rename(run_dir / "pending" / "registered.json")
    steps.link_mlflow_run(config.name, tracking_uri, version)

    # --- human approval (registry.promotion.approval: manual): the run pauses for a reviewer -----------
    review = None
    if decision.awaits_review:
        link = f"`sluice ui`, then Models → {version.model_name} → version {version.version}"
        review_text = review_summary(card_inputs, version=version.version, model_link=link)
        review = request_review(config, tracking_uri, version, review_text)

    return summary | {
        "existing": False,
        "test_metrics": tested.headline(),
        "test_intervals": {k: list(v) for k, v in tested.intervals.items()},
        "label_audit": audit,
        "best_epoch": trained.best_epoch,
        "resumed_from_epoch": trained.resumed_from_epoch,
        "device": trained.device,
        "model_name": version.model_name,
        "model_version": version.version,
        "aliases": review.aliases if review else version.aliases,
        "promotion": review.summary() if review else decision.summary(),
        "review": review.status if review else None,
        "compared_items": decision.compared.describe() if decision.compared else None,
        "tuning": {
            "method": config.tuning.method,
            "trials": len(trials),
            "chosen": {k: getattr(train_config, k) for k in config.tuning.grid or config.tuning.search_space},
        },
        "cross_validation": None if cv is None else {k: (cv.mean[k], cv.std[k]) for k in cv.mean},
        "run_id": version.run_id,
        "experiment_id": version.experiment_id,
    }


_TRAINING_SECTIONS = ("source", "columns", "clean", "expectations", "labels", "split", "train", "tuning")
"""The config sections that shape the trained model (the idempotency key); tuning's grid or trials included."""


def training_key(config: PipelineConfig, *, snapshot_id: str, labels: str, code: str, split_manifest: str) -> str:
    """The idempotency key of a training: the same key reports the existing version instead of a new one."""
    return input_key(
        snapshot=snapshot_id,
        labels=labels,
        config=config.section_hash(*_TRAINING_SECTIONS),
        code=code,
        packages=fingerprint.package_versions(),
        split_manifest=split_manifest,
    )


def _existing_summary(existing: tracking.RegisteredVersion) -> dict[str, Any]:
    metrics = tracking.run_metrics(existing.run_id)
    return {
        "existing": True,
        "test_metrics": {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")},
        "model_name": existing.model_name,
        "model_version": existing.version,
        "aliases": existing.aliases,
        "run_id": existing.run_id,
        "device": existing.tags.get("sluice.device", "?"),
        "promotion": existing.tags.get("sluice.gate_summary", ""),
    }


def _write_reports(run_dir: Path, *, leakage: LeakageReport, suites: list[Any], decision: PromotionDecision) -> Path:
    """The leakage, expectations and promotion reports, and the items compared with the champion."""
    reports = run_dir / "reports"
    (reports / "leakage_report.md").write_text(leakage.to_markdown())
    (reports / "leakage_report.json").write_text(json.dumps(leakage.to_dict(), indent=2))
    (reports / "expectations.json").write_text(json.dumps([o.to_dict() for o in suites], indent=2))
    (reports / "promotion.md").write_text(decision.to_markdown())
    if decision.compared is not None:
        ids = pd.DataFrame({"item_id": list(decision.compared.item_ids)})
        ids.assign(basis=decision.compared.basis).to_csv(reports / "compared_items.csv", index=False)
    return reports


def _copy_split_files(run_dir: Path, split: SplitOutcome, assignment_path: Path) -> Path:
    """This run's manifest and the carried-forward assignment, as the version's `split/` artifacts."""
    folder = run_dir / "split"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(split.manifest_path, folder / "manifest.parquet")
    shutil.copyfile(assignment_path, folder / "assignment.parquet")
    pointer = assignment_pointer(split.manifest_path.parent, str(split.dataset))
    if pointer.is_file():
        shutil.copyfile(pointer, folder / "assignment.json")
    return folder


def _run_tags(
    config: PipelineConfig,
    snapshot_id: str,
    split: SplitOutcome,
    assignment_path: Path,
    leakage_passed: bool,
    suites: list[Any],
) -> dict[str, str]:
    """The data tags of a run and its version: snapshot, split manifest and assignment, holdout, gates."""
    holdout = split.sizes().get("holdout")
    return {
        "sluice.dataset": config.name,
        "sluice.snapshot_id": snapshot_id,
        "sluice.split_manifest_hash": split.manifest_hash,
        "sluice.split_sizes": ", ".join(f"{k}={v}" for k, v in split.sizes().items()),
        "sluice.split_assignment": assignment_path.stem,
        "sluice.split_assignment_parent": split.parent.digest[:16] if split.parent else "none",
        "sluice.split_reshuffled": str(split.reshuffled).lower(),
        "sluice.holdout": f"{holdout} items ({split.holdout_source})" if holdout else "none",
        "sluice.expectations_success": str(all(o.success for o in suites)),
        "sluice.expectation_suites": ", ".join(o.suite for o in suites),
        "sluice.leakage_passed": str(leakage_passed),
    }
