"""The whole pipeline as one Prefect flow, stage after stage, from raw files to a registered model."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, runtime

from flows import steps
from flows.annotate import AnnotationOutcome, annotate_items
from flows.review import ReviewOutcome, request_review
from sluice import fingerprint, tracking
from sluice.config import GENERATION, PipelineConfig, load_config
from sluice.home import Home
from tasks.columns import ITEM_ID, LABEL
from tasks.generation import GenerationConfig
from tasks.generation_run import (
    GenerationRun,
    build_generation_registration,
    copy_generation_split_files,
    decide_generation,
)
from tasks.ingest import Snapshot
from tasks.labels import LabelOutcome
from tasks.leakage import LeakageReport
from tasks.model_card import review_summary
from tasks.partition import SplitOutcome, write_gap_rows
from tasks.promotion import Comparison, OnnxParity, PromotionDecision, decide_promotion, input_key
from tasks.quarantine import concat_quarantine, write_quarantine
from tasks.registration import RunOutcome, build_card_inputs, build_registration, copy_split_files, write_reports
from tasks.report import RowAccount, TestReport, account_rows
from tasks.train import TrainResult
from tasks.validate import ValidationOutcome


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
    if LABEL not in labelled.data.columns:
        return "none"  # labels.source none (train.task generation)
    pairs = labelled.data[[ITEM_ID, LABEL]].sort_values(ITEM_ID).to_csv(index=False)
    return hashlib.sha256(pairs.encode()).hexdigest()[:16]


def _run_dir(home: Home, config: PipelineConfig) -> Path:
    path = home.runs / config.name / str(runtime.flow_run.id or "local")
    (path / "reports").mkdir(parents=True, exist_ok=True)
    return path


def _expectations_summary(suites: list[ValidationOutcome]) -> list[dict[str, Any]]:
    return [
        {
            "suite": o.suite,
            "success": o.success,
            "passed": [e.label for e in o.passed],
            "failed": [e.label for e in o.expectations if not e.success],
            "data_docs": o.data_docs,
        }
        for o in suites
    ]


def _account_split(
    where: Home,
    snapshot: Snapshot,
    snapshot_ids: pd.Series,
    labelled: LabelOutcome,
    split: SplitOutcome,
    quarantine: pd.DataFrame,
    quarantine_path: Path,
) -> tuple[RowAccount, dict[str, Any]]:
    """Every row accounted for after the split, and the summary's rows and split entries.

    The split's copies join the quarantine; gap rows (temporal splits) are kept in their own file.
    """
    quarantine = concat_quarantine([quarantine, split.quarantine])
    write_quarantine(quarantine, quarantine_path)
    gap = split.gap_rows()
    gap_path = write_gap_rows(gap, steps.gap_file(where, snapshot.snapshot_id))
    account = account_rows(
        snapshot_ids,
        quarantine=quarantine,
        awaiting=labelled.awaiting[ITEM_ID],
        trainable={name: frame[ITEM_ID] for name, frame in split.frames().items()},
        gap=gap[ITEM_ID],
        holdout=split.holdout_rows()[ITEM_ID],
    )
    return account, {
        "rows": account.to_dict(),
        "gap_path": str(gap_path) if gap_path else None,
        "split_sizes": split.sizes(),
        "split_manifest_hash": split.manifest_hash,
        "split_assignment": split.describe_assignment(),
    }


def _compare(
    config: PipelineConfig, tracking_uri: str, where: Home, run_dir: Path, split: SplitOutcome, trained: TrainResult
) -> Comparison | str | None:
    """This version and the champion on items neither trained on; None without a champion; else why not."""
    champion = steps.find_champion(config.registry, tracking_uri, where, run_dir)
    if isinstance(champion, tuple):
        return steps.compare_with_champion(
            config.registry, steps.training_data(config), tracking_uri, champion, split, trained
        )
    return champion


def _summary(
    config: PipelineConfig,
    where: Home,
    run_dir: Path,
    tracking_uri: str,
    snapshot_id: str,
    account: RowAccount,
    quarantine_path: Path,
    suites: list[ValidationOutcome],
) -> dict[str, Any]:
    """The run's summary up to the labels: where it ran, its rows, quarantine and expectation suites."""
    return {
        "config": str(config.path),
        "home": str(where.root),
        "snapshot_id": snapshot_id,
        "rows": account.to_dict(),
        "quarantine_path": str(quarantine_path),
        "expectations": _expectations_summary(suites),
        "run_dir": str(run_dir),
        "flow_run_id": str(runtime.flow_run.id),
        "tracking_uri": tracking_uri,
    }


def _decide(
    config: PipelineConfig,
    tested: TestReport,
    compared: Comparison | str | None,
    annotated: AnnotationOutcome | None,
    onnx: OnnxParity,
) -> PromotionDecision:
    """Agreement, floors, ONNX parity and the champion comparison (or why there is none) as one decision."""
    return decide_promotion(
        config.registry.promotion,
        metrics=tested.metrics,
        compared=compared if isinstance(compared, Comparison) else None,
        alpha=annotated.report.alpha if annotated and annotated.report else None,
        onnx=onnx,
        champion_error=compared if isinstance(compared, str) else None,
    )


def _register(run: RunOutcome, where: Home, tracking_uri: str) -> tracking.RegisteredVersion:
    """Save the predictor, write the reports and split files, then register (kept on disk first)."""
    run.git_commit = _git_commit(run.config.base_dir)
    run.flow_run_id, run.flow_run_url = str(runtime.flow_run.id), str(runtime.flow_run.ui_url or "")
    # A database store keeps artifacts under the home; an MLflow server (http) has its own artifact store.
    run.artifacts_dir = None if tracking_uri.startswith(("http://", "https://")) else where.mlflow_artifacts
    run.registration_key = fingerprint.combine("register", run.input_key, str(runtime.flow_run.id or run.run_dir))
    run.trained.predictor.save(run.predictor_dir)
    registration = build_registration(run)
    write_reports(registration, run.reports_dir)
    copy_split_files(run)
    # Kept on disk first: when MLflow is down the run can be registered later with `sluice register`.
    pending = run.run_dir / "pending"
    tracking.write_pending(registration.record, pending, tracking_uri=tracking_uri)
    version = steps.register(run.config.name, tracking_uri, registration.record)
    (pending / "pending_registration.json").rename(pending / "registered.json")
    steps.link_mlflow_run(run.config.name, tracking_uri, version)
    return version


def _review(run: RunOutcome, tracking_uri: str, version: tracking.RegisteredVersion) -> ReviewOutcome | None:
    """registry.promotion.approval: manual: the run pauses for a reviewer; None when no review is due."""
    if not run.decision.awaits_review:
        return None
    link = f"`sluice ui`, then Models → {version.model_name} → version {version.version}"
    review_text = review_summary(build_card_inputs(run), version=version.version, model_link=link)
    return request_review(run.config, tracking_uri, version, review_text)


def _registered_summary(
    run: RunOutcome, version: tracking.RegisteredVersion, review: ReviewOutcome | None
) -> dict[str, Any]:
    """What the summary says about a newly trained, tested and registered version."""
    config, cv, tested, decision = run.config, run.cv, run.tested, run.decision
    return {
        "existing": False,
        "test_metrics": tested.headline(),
        "test_intervals": {k: list(v) for k, v in tested.intervals.items()},
        "label_audit": run.audit,
        "best_epoch": run.trained.best_epoch,
        "resumed_from_epoch": run.trained.resumed_from_epoch,
        "device": run.trained.device,
        "model_name": version.model_name,
        "model_version": version.version,
        "aliases": review.aliases if review else version.aliases,
        "promotion": review.summary() if review else decision.summary(),
        "review": review.status if review else None,
        "compared_items": decision.compared.describe() if decision.compared else None,
        "tuning": {
            "method": config.tuning.method,
            "trials": len(run.trials),
            "chosen": {k: getattr(run.train_config, k) for k in config.tuning.grid or config.tuning.search_space},
        },
        "cross_validation": None if cv is None else {k: (cv.mean[k], cv.std[k]) for k in cv.mean},
        "run_id": version.run_id,
        "experiment_id": version.experiment_id,
    }


def _split(config: PipelineConfig, where: Home, data: pd.DataFrame) -> tuple[SplitOutcome, LeakageReport, Path]:
    """The split and its leakage report, and the assignment it carries forward to the next run."""
    holdout = steps.holdout_file(config)
    split, leakage = steps.split(config.split, config.columns, holdout, config.name, where, data)
    inputs = steps.split_inputs(config.split, config.columns, holdout, data)
    return split, leakage, steps.carry_assignment(config.name, split, inputs)


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
        steps.prepare_demo_data(config.demo, config.source, where)

    # --- ingest ------------------------------------------------------------------------------------
    snapshot = steps.ingest(config.source, config.base_dir, config.name, where)
    steps.name_run(config.name, snapshot.snapshot_id)
    logger.info("snapshot %s: %d rows, %d quarantined", snapshot.snapshot_id, snapshot.rows, snapshot.quarantined)

    # --- raw expectations, clean, clean expectations (the gate) ------------------------------------------
    gated, cleaned, suites = steps.validated_items(config, where, snapshot)

    # --- annotation: Label Studio, agreement gate, consensus (labels.source: annotation) ------------------
    use_annotation = config.labels.source == "annotation"
    annotated = annotate_items(config, where, gated, tracking_uri=tracking_uri) if use_annotation else None

    # --- labels ------------------------------------------------------------------------------------
    labelled = steps.resolve_labels(
        steps.LabelSettings.of(config), gated, annotated.consensus_frame() if annotated else None, where
    )

    # --- account for every row, by item id (written now, so a run the split gate stops keeps it) --------
    snapshot_ids = snapshot.load_item_ids()
    stages = [snapshot.load_quarantine(), *(o.quarantine for o in suites), cleaned.quarantine, labelled.quarantine]
    quarantine = concat_quarantine(stages)
    quarantine_path = write_quarantine(quarantine, steps.quarantine_file(where, snapshot.snapshot_id))
    account = account_rows(
        snapshot_ids,
        quarantine=quarantine,
        awaiting=labelled.awaiting[ITEM_ID],
        trainable={"labelled": labelled.data[ITEM_ID]},
    )
    summary = _summary(config, where, run_dir, tracking_uri, snapshot.snapshot_id, account, quarantine_path, suites)
    summary["annotation"] = annotated.summary() if annotated else None
    if annotated is not None and annotated.status == "waiting":
        logger.info("annotation coverage %.1f%%: waiting for annotators, nothing trained", 100 * annotated.coverage)
        return summary | {"status": "waiting"}

    if config.data_quality.datalab:
        inputs = steps.quality_inputs(config.columns, config.train.task)
        steps.report_data_quality(
            config.data_quality,
            inputs,
            config.labels.classes,
            config.split.seed,
            config.name,
            labelled.data,
            run_dir / "reports",
        )

    # --- split + leakage gate (assigned items keep their split; the holdout stays frozen) -------------
    split, leakage, assignment_path = _split(config, where, labelled.data)
    frames = split.frames()

    # --- account again, through the split: copies quarantined, gap rows kept in their own file ---------
    account, split_summary = _account_split(where, snapshot, snapshot_ids, labelled, split, quarantine, quarantine_path)
    summary |= split_summary

    # --- identical inputs: report the existing version, train nothing ----------------------------------
    code_version = fingerprint.code_version()
    labels, manifest = _labels_hash(labelled), split.manifest_hash
    key = training_key(
        config, snapshot_id=snapshot.snapshot_id, labels=labels, code=code_version, split_manifest=manifest
    )
    existing = steps.find_existing(config.registry, tracking_uri, key)
    if existing is not None:
        logger.info("identical inputs already produced %s v%s", existing.model_name, existing.version)
        return summary | _existing_summary(existing)

    # What every registration records, whichever kind of model this run trains.
    recorded: dict[str, Any] = dict(
        config=config, snapshot_id=snapshot.snapshot_id, snapshot_path=snapshot.data_path, run_dir=run_dir,
        account=account, quarantine_path=quarantine_path, suites=suites, split=split,
        assignment_path=assignment_path, leakage=leakage, code_version=code_version, input_key=key,
    )  # fmt: skip

    # --- train.task generation: fine-tune a language model instead of a classifier ----------------------
    if config.train.task == GENERATION:
        # fine-tune on train (val perplexity per epoch), then test perplexity and samples, once
        generated = steps.train_generator(
            config.generation or GenerationConfig(), config.name, frames, run_dir / "generator"
        )
        generation = GenerationRun(**recorded, result=generated, decision=PromotionDecision(promote=False))
        return summary | _generation_stages(generation, where, tracking_uri)

    # --- tune, cross-validate, train, test, the promotion gate, registration and review -------------------
    return summary | _classifier_stages(recorded, frames, labelled, annotated, where, tracking_uri)


def _classifier_stages(
    recorded: dict[str, Any],
    frames: dict[str, pd.DataFrame],
    labelled: LabelOutcome,
    annotated: AnnotationOutcome | None,
    where: Home,
    tracking_uri: str,
) -> dict[str, Any]:
    """After the split: train a classifier, test it once, gate, register and (manual approval) review."""
    config: PipelineConfig = recorded["config"]
    split: SplitOutcome = recorded["split"]
    run_dir: Path = recorded["run_dir"]

    # --- tune (optional): a grid or Optuna search on the validation split --------------------------------
    tuned = config.tuning.method != "none"
    training = steps.training_data(config)
    train_config, trials = (
        steps.tune(config.tuning, config.train, training, frames) if tuned else (config.train, list[dict[str, Any]]())
    )

    # --- cross-validate (optional): group-aware folds over the train rows ----------------------------------
    cv = steps.cross_validate(train_config, training, split.data) if config.tuning.cross_validate else None

    # --- train: the chosen configuration, once more on train, early-stopped on val ----------------------------
    trained = steps.train(train_config, training, frames, run_dir, where.checkpoints / recorded["input_key"])

    # --- test (once), and on the test items with settled labels ----------------------------------------
    tested = steps.test(training, trained, frames["test"], run_dir)
    quality = annotated.consensus.quality if annotated and annotated.consensus else None
    audit = steps.audit_test(training, trained, frames["test"], quality) if quality is not None else {}

    # --- promotion gate: floors, ONNX parity, the champion on items neither version trained on ----------
    onnx = steps.export_onnx(config.registry, trained, frames["test"].head(256), run_dir / "onnx" / "model.onnx")
    compared = _compare(config, tracking_uri, where, run_dir, split, trained)
    decision = _decide(config, tested, compared, annotated, onnx)

    # --- register: reports, model card, split files, MLflow run and model version ------------------------
    run = RunOutcome(
        **recorded,
        labelled=labelled,
        annotated=annotated,
        frames=frames,
        train_config=train_config,
        trained=trained,
        tested=tested,
        onnx=onnx,
        decision=decision,
        trials=trials,
        cv=cv,
        audit=audit,
        audit_min_quality=steps.AUDIT_MIN_QUALITY,
    )
    version = _register(run, where, tracking_uri)

    # --- human approval (registry.promotion.approval: manual): the run pauses for a reviewer -----------
    review = _review(run, tracking_uri, version)
    return _registered_summary(run, version, review)


def _generation_stages(run: GenerationRun, where: Home, tracking_uri: str) -> dict[str, Any]:
    """After fine-tuning and testing: the perplexity gate, registration, and (manual approval) review."""
    config = run.config
    # --- promotion gate: the test perplexity ceiling (generation.max_perplexity) -------------------------
    run.decision = decide_generation(
        config.generation or GenerationConfig(), run.result, config.registry.promotion.approval
    )

    # --- register: reports, model card with samples, split files, MLflow run and model version ----------
    run.git_commit = _git_commit(config.base_dir)
    run.flow_run_id, run.flow_run_url = str(runtime.flow_run.id), str(runtime.flow_run.ui_url or "")
    run.artifacts_dir = None if tracking_uri.startswith(("http://", "https://")) else where.mlflow_artifacts
    run.registration_key = fingerprint.combine("register", run.input_key, str(runtime.flow_run.id or run.run_dir))
    registration = build_generation_registration(run)
    write_reports(registration, run.reports_dir)
    copy_generation_split_files(run)
    pending = run.run_dir / "pending"
    tracking.write_pending(registration.record, pending, tracking_uri=tracking_uri)
    version = steps.register(config.name, tracking_uri, registration.record)
    (pending / "pending_registration.json").rename(pending / "registered.json")
    steps.link_mlflow_run(config.name, tracking_uri, version)

    # --- human approval (registry.promotion.approval: manual) -------------------------------------------
    review = (
        request_review(config, tracking_uri, version, registration.model_card) if run.decision.awaits_review else None
    )
    return {
        "existing": False,
        "test_metrics": {"perplexity": run.result.test_perplexity},
        "samples": dict(zip(run.result.prompts, run.result.samples, strict=True)),
        "device": run.result.device,
        "model_name": version.model_name,
        "model_version": version.version,
        "aliases": review.aliases if review else version.aliases,
        "promotion": review.summary() if review else run.decision.summary(),
        "review": review.status if review else None,
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
        config=config.section_hash(*_TRAINING_SECTIONS, *(["generation"] if config.train.task == GENERATION else [])),
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
