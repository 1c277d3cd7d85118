"""Ingest on its own: raw files -> snapshot -> raw expectations -> clean, for one dataset config.

Scheduled by `prefect.yaml` (deployment `ingest`) so new raw files become a validated, clean snapshot
without training. With `dask` set, the per-file work (hash, then a first streaming read) runs as one
task per file on a Dask cluster; the snapshot itself is then written in one ordered pass, so it is
identical to a plain run's.

    dask=False            one process (the default)
    dask=True             a local Dask cluster, one worker process per core
    dask="tcp://h:8786"   an existing Dask cluster; every worker must see the raw files and the
                          project home at the same paths (a shared filesystem) and have sluice installed
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
from tasks import demo_data
from tasks import ingest as ingest_stage


@task(name="demo-data")
def prepare_demo_data(config: PipelineConfig, home: Home) -> Path:
    assert config.demo is not None
    target = Path(config.source.path.format(home=home.root))
    return demo_data.write_demo_data(config.demo.dataset, target, rows=config.demo.rows)


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


@flow(name="sluice-ingest", log_prints=False)
def ingest_flow(
    config_path: str = "configs/rotten_tomatoes.yaml",
    home: str | None = None,
    dask: bool | str = False,
) -> dict[str, Any]:
    """New raw files to a validated, clean snapshot; `dask` shares the per-file work out (see module doc)."""
    logger = get_run_logger()
    config = load_config(config_path)
    where = Home.resolve(home)

    # --- demo data (bundled real data written under the home) -------------------------------------
    if config.demo is not None:
        prepare_demo_data(config, where)

    # --- ingest --------------------------------------------------------------------------------------
    if dask and config.source.sql is None:  # a database source is one stream: nothing to share out
        parallel = ingest_files_parallel.with_options(task_runner=dask_task_runner(dask))
        snapshot = parallel(config_path=str(config.path or config_path), home=str(where.root))
    else:
        snapshot = steps.ingest(config, where)
    logger.info("snapshot %s: %d rows, %d quarantined", *_counts(snapshot))

    # --- raw expectations ------------------------------------------------------------------------------
    raw, raw_outcome = steps.validate_raw(config, where, snapshot)

    # --- clean -----------------------------------------------------------------------------------------
    cleaned = steps.clean(config, raw)

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
