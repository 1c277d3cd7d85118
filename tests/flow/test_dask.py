"""Ingest on a Dask cluster of worker processes: one task per file, and the same snapshot a plain run writes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from sluice.home import Home
from tasks.demo_data import rotten_tomatoes_frame
from tasks.ingest import Snapshot

pytestmark = pytest.mark.usefixtures("prefect_server")

FILES = 4


@pytest.fixture
def raw_folder(tmp_path: Path) -> Path:
    """Real review snippets split over several CSV files, one row repeated across two of them."""
    folder = tmp_path / "raw"
    folder.mkdir()
    frame = rotten_tomatoes_frame(400)
    parts = [frame.iloc[i::FILES] for i in range(FILES)]
    parts[-1] = pd.concat([parts[-1], parts[0].head(1)])  # a repeat in another file: suffix -1
    for i, part in enumerate(parts):
        part.to_csv(folder / f"part-{i}.csv", index=False)
    return folder


@pytest.fixture
def dask_address(tmp_path: Path) -> Iterator[str]:
    """A `dask scheduler` and a `dask worker` (two worker processes) started as commands on loopback, stopped after."""
    from distributed import Client

    dask = Path(sys.executable).parent / "dask"
    scheduler_file = tmp_path / "scheduler.json"
    log = (tmp_path / "dask.log").open("w")
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--port", "0", "--scheduler-file", scheduler_file, *common], stdout=log, stderr=log
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and scheduler.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scheduler_file.exists(), f"dask scheduler did not start: {(tmp_path / 'dask.log').read_text()}"
        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen(
            [dask, "worker", address, "--nworkers", "2", "--nthreads", "1", *common],
            stdout=log,
            stderr=log,
            cwd=Path(__file__).parents[2],
        )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        log.close()


def _snapshot(result: dict[str, object]) -> Snapshot:
    directory = Path(str(result["snapshot_dir"]))
    manifest = json.loads((directory / "manifest.json").read_text())
    return Snapshot(str(result["snapshot_id"]), directory, manifest)


def _task_names(flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def _read() -> list[str]:
        async with get_client() as client:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            ids = [flow_run_id, *[str(c.id) for c in children]]
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": ids}))
            return [r.name for r in runs]

    return asyncio.run(_read())


def test_dask_ingest_writes_the_snapshot_a_plain_run_writes(
    make_config: Callable[..., Path], raw_folder: Path, tmp_path: Path, dask_address: str
) -> None:
    from flows.ingest import ingest_flow

    config = make_config(source__path=str(raw_folder), demo=None)
    plain = ingest_flow(config_path=str(config), home=str(tmp_path / "plain"))

    # a separately started scheduler and worker, by address, as for a remote cluster; then validation and
    # cleaning a partition of 37 rows at a time (11 partitions)
    state = ingest_flow(
        config_path=str(config), home=str(tmp_path / "dask"), dask=dask_address, partition_rows=37, return_state=True
    )
    distributed = state.result()

    assert distributed["snapshot_id"] == plain["snapshot_id"]
    pd.testing.assert_frame_equal(_snapshot(distributed).load(), _snapshot(plain).load())
    assert distributed["clean_rows"] == plain["clean_rows"] and distributed["rows"] == 401
    data = _snapshot(distributed).load()
    assert data["item_id"].str.endswith("-1").sum() == 1  # the repeat across files kept its suffix
    # the clean stage's quarantine is kept under the home, as a pipeline run keeps it
    quarantine = pd.read_parquet(plain["quarantine_path"])
    assert len(quarantine) == plain["clean_quarantined"] >= 1
    assert data["item_id"][data["item_id"].str.endswith("-1")].isin(quarantine["item_id"]).all()

    # partitioned validation and cleaning removed the same rows for the same reasons and kept the rest in order
    columns = ["item_id", "step", "reason"]
    partitioned = pd.read_parquet(distributed["quarantine_path"])[columns]
    pd.testing.assert_frame_equal(partitioned, quarantine[columns])
    kept = pd.read_parquet(str(distributed["clean_path"]))["item_id"]
    assert kept.tolist() == data["item_id"][~data["item_id"].isin(quarantine["item_id"])].tolist()

    names = _task_names(str(state.state_details.flow_run_id))
    assert sum(n.startswith("scan-source") for n in names) == FILES
    assert sum(n.startswith("describe-source") for n in names) == FILES


def test_a_second_dask_run_reuses_the_snapshot_without_scanning(
    make_config: Callable[..., Path], raw_folder: Path, tmp_path: Path
) -> None:
    from flows.ingest import dask_task_runner, ingest_files_parallel

    config = make_config(source__path=str(raw_folder), demo=None)
    home = Home.resolve(tmp_path / "home")
    # the local cluster `ingest_flow(dask=True)` starts: worker processes, so tasks and results are pickled
    parallel = ingest_files_parallel.with_options(task_runner=dask_task_runner(True))
    first = parallel(config_path=str(config), home=str(home.root))
    state = parallel(config_path=str(config), home=str(home.root), return_state=True)
    second = state.result()

    assert second.snapshot_id == first.snapshot_id and second.reused and not first.reused
    names = _task_names(str(state.state_details.flow_run_id))
    assert not any(n.startswith("scan-source") for n in names)
