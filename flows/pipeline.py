"""The whole pipeline as one Prefect flow, stage after stage, from raw files to a registered model."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, runtime, task

from flows import steps
from sluice.config import PipelineConfig, load_config
from sluice.home import Home
from tasks import demo_data
from tasks.quarantine import concat_quarantine, write_quarantine
from tasks.report import RowAccount


@task(name="demo-data")
def prepare_demo_data(config: PipelineConfig, home: Home) -> Path:
    assert config.demo is not None
    target = Path(config.source.path.format(home=home.root))
    return demo_data.write_demo_data(config.demo.dataset, target, rows=config.demo.rows)


def _git_commit(base_dir: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=base_dir, capture_output=True, text=True, timeout=5, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _run_dir(home: Home, config: PipelineConfig) -> Path:
    run_id = runtime.flow_run.id or "local"
    path = home.runs / config.name / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


@flow(name="sluice-pipeline", log_prints=False)
def pipeline(config_path: str = "configs/rotten_tomatoes.yaml", home: str | None = None) -> dict[str, Any]:
    """Raw files to a registered MLflow model version, one stage after another."""
    logger = get_run_logger()
    config = load_config(config_path)
    where = Home.resolve(home)
    run_dir = _run_dir(where, config)

    # --- demo data (bundled real data written under the home) -------------------------------------
    if config.demo is not None:
        prepare_demo_data(config, where)

    # --- ingest ------------------------------------------------------------------------------------
    snapshot = steps.ingest(config, where)
    logger.info("snapshot %s: %d rows, %d malformed", snapshot.snapshot_id, snapshot.rows, snapshot.quarantined)

    # --- raw expectations --------------------------------------------------------------------------
    raw, raw_outcome = steps.validate_raw(config, where, snapshot)

    # --- clean -------------------------------------------------------------------------------------
    cleaned = steps.clean(config, raw)

    # --- clean expectations: the gate ----------------------------------------------------------------
    gated, clean_outcome = steps.validate_clean(config, where, cleaned.data, snapshot.snapshot_id)

    # --- labels ------------------------------------------------------------------------------------
    labelled = steps.resolve_labels(config, gated, None)

    # --- split + leakage gate ----------------------------------------------------------------------
    split, leakage = steps.split(config, where, labelled.data)
    frames = split.frames()

    # --- train -------------------------------------------------------------------------------------
    trained = steps.train(config, frames, run_dir)

    # --- test (once) -------------------------------------------------------------------------------
    tested = steps.test(config, trained, frames["test"], run_dir)

    # --- account for every row ---------------------------------------------------------------------
    quarantine = concat_quarantine(
        [
            snapshot.load_quarantine(),
            raw_outcome.quarantine if raw_outcome else pd.DataFrame(),
            cleaned.quarantine,
            clean_outcome.quarantine if clean_outcome else pd.DataFrame(),
            labelled.quarantine,
        ]
    )
    quarantine_path = write_quarantine(quarantine, where.root / "quarantine" / f"{snapshot.snapshot_id}.parquet")
    account = RowAccount(
        rows_in=snapshot.rows + snapshot.quarantined,
        trainable=len(labelled.data),
        awaiting=len(labelled.awaiting),
        quarantined={str(k): int(v) for k, v in quarantine["step"].value_counts().items()},
    )
    account.check()

    # --- register ----------------------------------------------------------------------------------
    predictor_dir = run_dir / "predictor"
    trained.predictor.save(predictor_dir)
    leakage_path = run_dir / "reports" / "leakage_report.md"
    leakage_path.write_text(leakage.to_markdown())
    sizes = split.sizes()
    suites = [o for o in (raw_outcome, clean_outcome) if o is not None]
    tags = {
        "sluice.dataset": config.name,
        "sluice.snapshot_id": snapshot.snapshot_id,
        "sluice.split_manifest_hash": split.manifest_hash,
        "sluice.split_sizes": ", ".join(f"{k}={v}" for k, v in sizes.items()),
        "sluice.expectations_success": str(all(o.success for o in suites)),
        "sluice.expectation_suites": ", ".join(o.suite for o in suites),
        "sluice.leakage_passed": str(leakage.passed),
        "sluice.labels_source": labelled.source,
        "sluice.git_commit": _git_commit(config.base_dir),
        "sluice.device": trained.device,
        "prefect.flow_run_id": str(runtime.flow_run.id),
        "prefect.flow_run_url": str(runtime.flow_run.ui_url or ""),
    }
    tracking_uri = config.registry.tracking_uri or where.service_env()["MLFLOW_TRACKING_URI"]
    steps.tracking.configure_tracking(tracking_uri)
    version = steps.register(
        config,
        where,
        {
            "experiment": config.registry.experiment or config.name,
            "artifacts_dir": where.mlflow_artifacts if tracking_uri.startswith("sqlite") else None,
            "run_name": f"{config.name}-{snapshot.snapshot_id[:8]}",
            "params": config.flat_params(),
            "tags": tags,
            "history": trained.history,
            "metrics": {f"test_{k}": v for k, v in tested.metrics.items()}
            | {"best_epoch": trained.best_epoch, "train_samples_per_second": trained.samples_per_second},
            "datasets": {
                name: (frame.drop(columns=["split"]), str(snapshot.data_path), "label")
                for name, frame in frames.items()
            },
            "artifacts": [run_dir / "reports", quarantine_path, split.manifest_path],
            "predictor_dir": predictor_dir,
            "input_example": frames["test"][trained.predictor.input_columns].head(3).reset_index(drop=True),
            "output_example": tested.output_example,
            "model_name": config.registry.model_name,
            "version_tags": {k: v for k, v in tags.items() if k.startswith("sluice.")},
            "description": (
                f"Trained on snapshot `{snapshot.snapshot_id}` ({sizes}). "
                f"Test: " + ", ".join(f"{k} {v:.3f}" for k, v in tested.headline().items())
            ),
        },
    )

    return {
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
        "split_sizes": sizes,
        "split_manifest_hash": split.manifest_hash,
        "test_metrics": tested.headline(),
        "best_epoch": trained.best_epoch,
        "device": trained.device,
        "model_name": version.model_name,
        "model_version": version.version,
        "run_id": version.run_id,
        "experiment_id": version.experiment_id,
        "tracking_uri": version.tracking_uri,
        "run_dir": str(run_dir),
        "flow_run_id": str(runtime.flow_run.id),
    }
