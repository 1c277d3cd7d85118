"""The whole pipeline as one Prefect flow, stage after stage, from raw files to a registered model."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, runtime

from flows import steps
from flows.annotate import AnnotationOutcome, annotate_items
from sluice import fingerprint, tracking
from sluice.config import PipelineConfig, load_config
from sluice.home import Home
from tasks.columns import ITEM_ID, LABEL, SPLIT
from tasks.labels import LabelOutcome
from tasks.model_card import CardInputs, build_model_card
from tasks.partition import write_gap_rows
from tasks.promotion import DataGates, decide_promotion, input_key
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
    snapshot_ids = pd.read_parquet(snapshot.data_path, columns=[ITEM_ID])[ITEM_ID]
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

    # --- split + leakage gate ----------------------------------------------------------------------
    split, leakage = steps.split(config, where, labelled.data)
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
    )

    summary |= {
        "rows": account.to_dict(),
        "gap_path": str(gap_path) if gap_path else None,
        "split_sizes": split.sizes(),
        "split_manifest_hash": split.manifest_hash,
    }

    # --- identical inputs: report the existing version, train nothing ----------------------------------
    code_version = fingerprint.code_version()
    key = input_key(
        snapshot_id=snapshot.snapshot_id,
        labels_hash=_labels_hash(labelled),
        config_hash=config.section_hash("source", "columns", "clean", "expectations", "labels", "split", "train"),
        code_version=code_version,
    )
    existing = steps.find_existing(config, tracking_uri, key)
    if existing is not None:
        logger.info("identical inputs already produced %s v%s", existing.model_name, existing.version)
        metrics = tracking.run_metrics(existing.run_id)
        return summary | {
            "existing": True,
            "test_metrics": {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")},
            "model_name": existing.model_name,
            "model_version": existing.version,
            "aliases": existing.aliases,
            "run_id": existing.run_id,
            "device": existing.tags.get("sluice.device", "?"),
            "promotion": existing.tags.get("sluice.gate_summary", ""),
        }

    # --- tune (optional): a grid or Optuna search on the validation split --------------------------------
    train_config, trials = config.train, list[dict[str, Any]]()
    if config.tuning.method != "none":
        train_config, trials = steps.tune(config, frames)

    # --- cross-validate (optional): group-aware folds over the train rows ----------------------------------
    cv = steps.cross_validate(config, train_config, split.data) if config.tuning.cross_validate else None

    # --- train: the chosen configuration, once more on train, early-stopped on val ----------------------------
    trained = steps.train(config, train_config, frames, run_dir)

    # --- test (once) -------------------------------------------------------------------------------
    tested = steps.test(config, trained, frames["test"], run_dir)

    # --- promotion gate: data gates, floors, champion on the same test set ------------------------------
    scored = steps.score_champion(config, tracking_uri, frames["test"])
    champion = scored if isinstance(scored, tuple) else None
    gates = DataGates(
        expectations_passed=all(o.success for o in suites),
        suites=[o.suite for o in suites],
        leakage_passed=leakage.passed,
        alpha=annotated.report.alpha if annotated and annotated.report else None,
    )
    decision = decide_promotion(
        config.registry.promotion,
        gates=gates,
        metrics=tested.metrics,
        champion_metrics=champion[1] if champion else None,
        champion_version=champion[0] if champion else None,
        champion_error=scored if isinstance(scored, str) else None,
    )

    # --- register ----------------------------------------------------------------------------------
    predictor_dir = run_dir / "predictor"
    trained.predictor.save(predictor_dir)
    onnx_gap = steps.export_onnx(trained, frames["test"].head(256), run_dir / "onnx" / "model.onnx")
    reports = run_dir / "reports"
    (reports / "leakage_report.md").write_text(leakage.to_markdown())
    (reports / "leakage_report.json").write_text(json.dumps(leakage.to_dict(), indent=2))
    (reports / "expectations.json").write_text(json.dumps([o.to_dict() for o in suites], indent=2))
    (reports / "promotion.md").write_text(decision.to_markdown())
    tags = {
        "sluice.dataset": config.name,
        "sluice.snapshot_id": snapshot.snapshot_id,
        "sluice.split_manifest_hash": split.manifest_hash,
        "sluice.split_sizes": ", ".join(f"{k}={v}" for k, v in split.sizes().items()),
        "sluice.expectations_success": str(gates.expectations_passed),
        "sluice.expectation_suites": ", ".join(gates.suites),
        "sluice.leakage_passed": str(leakage.passed),
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
    card = build_model_card(
        CardInputs(
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
            leakage_passed=leakage.passed,
            leakage_findings=[f"{c.name}: {c.summary}" for c in leakage.checks if not c.skipped],
            expectations={o.suite: o.success for o in suites},
            metrics=tested.headline(),
            intervals=tested.intervals,
            decision_markdown=decision.to_markdown(),
            champion_version=champion[0] if champion else None,
            champion_metrics=champion[1] if champion else None,
            training={
                "architecture": config.train.architecture,
                "best epoch": trained.best_epoch,
                "device": trained.device,
                "precision": trained.precision,
            },
        )
    )
    (reports / "model_card.md").write_text(card)
    record = {
        "experiment": config.registry.experiment or config.name,
        "artifacts_dir": where.mlflow_artifacts if tracking_uri.startswith("sqlite") else None,
        "run_name": f"{config.name}-{snapshot.snapshot_id[:8]}",
        "params": config.flat_params()
        | {f"train.{k}": str(v) for k, v in train_config.model_dump(mode="json").items()},
        "tags": tags,
        "history": trained.history,
        "metrics": {f"test_{k}": v for k, v in tested.metrics.items()}
        | {"best_epoch": float(trained.best_epoch), "train_samples_per_second": trained.samples_per_second}
        | _agreement_metrics(annotated)
        | _cv_metrics(cv)
        | ({"onnx_max_abs_logit_diff": onnx_gap} if onnx_gap is not None else {}),
        "children": [
            {"name": f"trial-{n}", "params": t["params"], "metrics": t["metrics"]} for n, t in enumerate(trials)
        ],
        "datasets": {
            name: (frame.drop(columns=[SPLIT]), str(snapshot.data_path), LABEL) for name, frame in frames.items()
        },
        "artifacts": [reports, quarantine_path, split.manifest_path, *agreement_files]
        + ([run_dir / "onnx"] if onnx_gap is not None else []),
        "predictor_dir": predictor_dir,
        "input_example": frames["test"][trained.predictor.input_columns].head(3).reset_index(drop=True),
        "output_example": tested.output_example,
        "model_name": config.registry.model_name,
        "version_tags": {k: v for k, v in tags.items() if k.startswith("sluice.")},
        "description": card,
        "promote": decision.promote,
        "decision_tags": decision.as_tags(),
    }
    # Kept on disk first: when MLflow is down the run can be registered later with `sluice register`.
    tracking.write_pending(record, run_dir / "pending", tracking_uri=tracking_uri)
    version = steps.register(config, tracking_uri, record)
    (run_dir / "pending" / "pending_registration.json").rename(run_dir / "pending" / "registered.json")
    steps.link_mlflow_run(config.name, tracking_uri, version)

    return summary | {
        "existing": False,
        "test_metrics": tested.headline(),
        "best_epoch": trained.best_epoch,
        "device": trained.device,
        "model_name": version.model_name,
        "model_version": version.version,
        "aliases": version.aliases,
        "promotion": decision.summary(),
        "tuning": {
            "method": config.tuning.method,
            "trials": len(trials),
            "chosen": {k: getattr(train_config, k) for k in config.tuning.grid or config.tuning.search_space},
        },
        "cross_validation": None if cv is None else {k: (cv.mean[k], cv.std[k]) for k in cv.mean},
        "run_id": version.run_id,
        "experiment_id": version.experiment_id,
    }
