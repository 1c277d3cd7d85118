"""Orchestration overhead: the full Prefect flow against the same stage functions called plainly.

Both run in this process on the same data (the Rotten Tomatoes demo data with labels from the source
column) and the same training settings. The flow also logs to MLflow and registers the model; its
task runs are read back from Prefect so the ratio is shown with and without that work.

    .venv/bin/python bench/overhead.py [--rows N] [--epochs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _config(folder: Path, rows: int | None, epochs: int) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "rotten_tomatoes_labelled.yaml").read_text())
    raw["demo"]["rows"] = rows
    raw["train"]["epochs"] = epochs
    raw["train"]["patience"] = epochs  # same number of epochs in both runs
    raw["train"]["progress"] = False
    raw["registry"]["model_name"] = "bench-overhead"
    for key in ("raw_suite", "clean_suite"):
        raw["expectations"][key] = str(REPO / raw["expectations"][key])
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def plain_stages(config_path: Path, home_root: Path) -> dict[str, float]:
    """The pipeline's stage functions, called one after another with no orchestration and no MLflow."""
    from sluice.config import load_config
    from sluice.home import Home
    from tasks.clean import clean_frame
    from tasks.columns import LABEL
    from tasks.demo_data import write_demo_data
    from tasks.ingest import ingest_files, resolve_sources
    from tasks.labels import labels_from_column
    from tasks.partition import check_leakage, split_frame
    from tasks.report import score_test_split
    from tasks.train import train_model
    from tasks.validate import validate_frame

    config = load_config(config_path)
    home = Home.resolve(home_root)
    times: dict[str, float] = {}

    def timed(name: str, start: float) -> None:
        times[name] = time.perf_counter() - start

    t = time.perf_counter()
    assert config.demo is not None
    raw_path = write_demo_data(
        config.demo.dataset, Path(config.source.path.format(home=home.root)), rows=config.demo.rows
    )
    snapshot = ingest_files(resolve_sources(str(raw_path)), snapshot_root=home.snapshots, config=config.source)
    timed("ingest", t)
    t = time.perf_counter()
    raw, _ = validate_frame(
        snapshot.load(), Path(config.expectations.raw_suite or ""), gx_root=home.gx, asset="raw", where="bench"
    )
    timed("validate-raw", t)
    t = time.perf_counter()
    cleaned = clean_frame(raw, config.clean)
    timed("clean", t)
    t = time.perf_counter()
    gated, _ = validate_frame(
        cleaned.data, Path(config.expectations.clean_suite or ""), gx_root=home.gx, asset="clean", where="bench"
    )
    timed("validate-clean", t)
    t = time.perf_counter()
    labelled = labels_from_column(gated, config.labels)
    split = split_frame(labelled.data, config.split, manifest_root=home.splits)
    check_leakage(split)
    timed("labels+split", t)
    frames = split.frames()
    t = time.perf_counter()
    trained = train_model(
        frames["train"],
        frames["val"],
        label_col=LABEL,
        classes=config.labels.classes,
        config=config.train,
        text_col=config.columns.text,
    )
    timed("train", t)
    t = time.perf_counter()
    score_test_split(
        trained.predictor,
        frames["test"],
        label_col=LABEL,
        classes=config.labels.classes,
        history=trained.history,
        out_dir=home.runs / "plain",
    )
    timed("test", t)
    return times


async def _task_seconds(flow_run_id: str) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    seconds: dict[str, float] = {}
    for run in runs:
        name = run.name.rsplit("-", 1)[0]
        seconds[name] = seconds.get(name, 0.0) + (run.total_run_time.total_seconds() if run.total_run_time else 0.0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="rows of the demo data (default: all 5,022)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{base / 'mlflow.db'}"
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    os.environ["MPLCONFIGDIR"] = str(base / "mpl")
    config_path = _config(base, args.rows, args.epochs)

    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline

    # Warm-up outside the clock: imports (GX, MLflow, torch) and the MLflow database migrations.
    plain_stages(config_path, base / "warmup")
    from sluice import tracking

    tracking.configure_tracking(os.environ["MLFLOW_TRACKING_URI"])
    tracking.ensure_experiment("warm-up", artifacts_dir=base / "artifacts")

    t = time.perf_counter()
    stages = plain_stages(config_path, base / "plain")
    plain = time.perf_counter() - t

    with prefect_test_harness(server_startup_timeout=120):
        t = time.perf_counter()
        result = pipeline(config_path=str(config_path), home=str(base / "flow"))
        flow_seconds = time.perf_counter() - t
        tasks = asyncio.run(_task_seconds(result["flow_run_id"]))

    mlflow_seconds = (
        tasks.get("register", 0.0) + tasks.get("find-existing-version", 0.0) + tasks.get("score-champion", 0.0)
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"data: {result['rows']['rows_in']} rows, {args.epochs} epochs")
    print("plain stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
    print("flow task runs: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(tasks.items())))
    print(f"plain stage functions: {plain:.2f} s")
    print(f"Prefect flow (with MLflow logging + registration): {flow_seconds:.2f} s; ratio {flow_seconds / plain:.2f}")
    without = flow_seconds - mlflow_seconds
    print(
        f"Prefect flow without its MLflow tasks ({mlflow_seconds:.2f} s): {without:.2f} s; "
        f"orchestration overhead ratio {without / plain:.2f}"
    )


if __name__ == "__main__":
    main()
