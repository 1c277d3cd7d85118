"""Ingest on its own: raw files -> snapshot -> raw expectations -> clean, for one dataset config.

Scheduled by `prefect.yaml` (deployment `ingest`) so new raw files become a validated, clean snapshot
without training. With `dask` set, the per-file work (hash, then a first streaming read) runs as one
task per file on a Dask cluster; the snapshot itself is then written in one ordered pass, so it is
identical to a plain run's.

    dask=False            one process (the default)
    dask=True             a local Dask cluster, one worker process per core
    dask="tcp://h:8786"   an existing Dask cluster; every worker must see the raw files and the
                          project home at the same paths (a shared filesystem) and have sluice installed

With `partition_rows` set, raw validation and cleaning read the snapshot that many rows at a time
(`tasks.partitioned`) and write their output under `<home>/partitioned/<snapshot id>/`, so data
bigger than memory passes with the answer a single pass gives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.task_runners import TaskRunner

from flows import steps
from sluice.config import PipelineConfig, load_config
from sluice.home import Home
from tasks import ingest as ingest_stage
from tasks import partitioned
from tasks import validate as validate_stage


@task(name="describe-source")
def describe_source(path: Path, source: ingest_stage.SourceConfig) -> ingest_stage.SourceFile:
    return ingest_stage.describe_source(path, source)


@task(name="scan-source")
def scan_source(file: ingest_stage.SourceFile, source: ingest_stage.SourceConfig) -> ingest_stage.SourceScan:
    return ingest_stage.scan_source(file, source)


@task(name="write-snapshot")
def write_snapshot(
    scans: list[ingest_stage.SourceScan], source: ingest_stage.SourceConfig, snapshot_root: Path
) -> ingest_stage.Snapshot:
    return ingest_stage.write_snapshot(scans, snapshot_root=snapshot_root, config=source)


@flow(name="sluice-ingest-files")
def ingest_files_parallel(config_path: str, home: str) -> ingest_stage.Snapshot:
    """One task per source file (hash, then scan) on the flow's task runner; one ordered write."""
    config, where = load_config(config_path), Home.resolve(home)
    paths = ingest_stage.resolve_sources(config.source.path.format(home=where.root), base_dir=config.base_dir)
    files = describe_source.map(paths, source=unmapped(config.source)).result()
    existing = ingest_stage.find_snapshot(files, snapshot_root=where.snapshots, config=config.source)
    if existing is not None:
        return existing
    scans = scan_source.map(files, source=unmapped(config.source)).result()
    snapshot = write_snapshot(scans, config.source, where.snapshots)
    steps.publish(f"{config.name}-ingest", snapshot.summary_markdown(), "Snapshot written by ingest")
    return snapshot


def partition_folder(home: Home, snapshot_id: str) -> Path:
    """Where partitioned validation and cleaning write the rows they keep."""
    return home.root / "partitioned" / snapshot_id


@task(name="validate-raw-partitioned")
def validate_raw_partitioned(
    config: PipelineConfig, home: Home, snapshot: ingest_stage.Snapshot, rows: int
) -> tuple[Path, validate_stage.ValidationOutcome | None]:
    folder = partition_folder(home, snapshot.snapshot_id)
    folder.mkdir(parents=True, exist_ok=True)
    if not config.expectations.raw_suite:
        return snapshot.data_path, None
    outcome = partitioned.validate_parquet(
        snapshot.data_path,
        folder / "raw.parquet",
        config.resolve_path(config.expectations.raw_suite),
        gx_root=home.gx,
        asset=f"{config.name}-raw",
        where=f"snapshot {snapshot.snapshot_id}",
        rows_per_partition=rows,
    )
    steps.publish(f"{config.name}-expectations-raw", outcome.summary_markdown(), "Raw-data expectation suite")
    return folder / "raw.parquet", outcome


@task(name="clean-partitioned")
def clean_partitioned(config: PipelineConfig, source: Path, target: Path, rows: int) -> partitioned.PartitionedClean:
    return partitioned.clean_parquet(source, target, config.clean, rows_per_partition=rows)


def _counts(snapshot: ingest_stage.Snapshot) -> tuple[str, int, int]:
    return snapshot.snapshot_id, snapshot.rows, snapshot.quarantined


def dask_task_runner(dask: bool | str) -> TaskRunner[Any]:
    """A DaskTaskRunner: a local cluster (one single-threaded worker process per core) or `address`."""
    from prefect_dask import DaskTaskRunner

    if isinstance(dask, str):
        return DaskTaskRunner(address=dask)
    workers = os.cpu_count() or 2
    # dashboard off: it needs bokeh, and a local ingest has nobody to watch it
    cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    return DaskTaskRunner(cluster_kwargs=cluster)


def _validate_and_clean_partitioned(
    config: PipelineConfig, where: Home, snapshot: ingest_stage.Snapshot, rows: int
) -> dict[str, Any]:
    """Raw expectations and cleaning a partition at a time; the kept rows stay on disk."""
    raw_path, raw_outcome = validate_raw_partitioned(config, where, snapshot, rows)
    clean_path = partition_folder(where, snapshot.snapshot_id) / "clean.parquet"
    cleaned = clean_partitioned(config, raw_path, clean_path, rows)
    quarantine_path = steps.persist_quarantine(
        where, snapshot, [o for o in (raw_outcome,) if o is not None], cleaned.quarantine
    )
    return {
        "snapshot_id": snapshot.snapshot_id,
        "snapshot_dir": str(snapshot.directory),
        "reused": snapshot.reused,
        "rows": snapshot.rows,
        "malformed": snapshot.quarantined,
        "raw_expectations": None if raw_outcome is None else raw_outcome.success,
        "clean_rows": cleaned.rows_kept,
        "clean_quarantined": len(cleaned.quarantine),
        "clean_path": str(clean_path),
        "quarantine_path": str(quarantine_path),
    }


@flow(name="sluice-ingest", log_prints=False)
def ingest_flow(
    config_path: str = "configs/rotten_tomatoes.yaml",
    home: str | None = None,
    dask: bool | str = False,
    partition_rows: int | None = None,
) -> dict[str, Any]:
    """New raw files to a validated, clean snapshot; `dask` shares the per-file work out, `partition_rows`
    validates and cleans a partition at a time (see module doc)."""
    logger = get_run_logger()
    config = load_config(config_path)
    where = Home.resolve(home)

    # --- demo data (bundled real data written under the home) -------------------------------------
    if config.demo is not None:
        steps.prepare_demo_data(config.demo, config.source, where)

    # --- ingest --------------------------------------------------------------------------------------
    if dask and config.source.sql is None:  # a database source is one stream: nothing to share out
        parallel = ingest_files_parallel.with_options(task_runner=dask_task_runner(dask))
        snapshot = parallel(config_path=str(config.path or config_path), home=str(where.root))
    else:
        snapshot = steps.ingest(config.source, config.base_dir, config.name, where)
    logger.info("snapshot %s: %d rows, %d quarantined", *_counts(snapshot))

    if partition_rows:
        return _validate_and_clean_partitioned(config, where, snapshot, partition_rows) | {
            "config": str(config.path or config_path)
        }

    # --- raw expectations ------------------------------------------------------------------------------
    raw, raw_outcome = steps.validate_raw(
        config.columns, config.labels, steps.suite_path(config, "raw_suite"), config.name, where, snapshot
    )

    # --- clean -----------------------------------------------------------------------------------------
    cleaned = steps.clean(config.clean, config.columns, config.train.task, config.name, raw)

    # --- quarantine: what these stages removed, beside what later stages of a pipeline run removed ------
    quarantine_path = steps.persist_quarantine(
        where, snapshot, [o for o in (raw_outcome,) if o is not None], cleaned.quarantine
    )

    return {
        "config": str(config.path or config_path),
        "snapshot_id": snapshot.snapshot_id,
        "snapshot_dir": str(snapshot.directory),
        "reused": snapshot.reused,
        "rows": snapshot.rows,
        "malformed": snapshot.quarantined,
        "raw_expectations": None if raw_outcome is None else raw_outcome.success,
        "clean_rows": len(cleaned.data),
        "clean_quarantined": len(cleaned.quarantine),
        "quarantine_path": str(quarantine_path),
    }
