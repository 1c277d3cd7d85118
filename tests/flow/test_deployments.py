"""`sluice serve`'s set-up against a real local Prefect server: prefect.yaml deployed, a worker runs one."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sluice.deploy import WORK_POOL, Served, deployable_names, prepare_deployments, worker_command
from sluice.home import Home
from sluice.services import stop_service

pytestmark = pytest.mark.slow  # a real server (~20 s), `prefect deploy` (~20 s), one flow run by a worker


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Deploy prefect.yaml to a fresh server under a temporary home; the server is stopped at the end."""
    home = Home.resolve(tmp_path_factory.mktemp("serve") / "home")
    repo = Path(__file__).resolve().parents[2]
    try:
        yield prepare_deployments(home, repo)
    finally:
        stop_service(home, "worker")
        stop_service(home, "prefect")


def test_every_deployment_in_prefect_yaml_is_on_the_server_with_its_schedule(served: Served) -> None:
    by_name = {d.name: d for d in served.deployments}
    expected = {
        "sluice-ingest/ingest": ["cron 0 * * * * (UTC)"],
        "sluice-pipeline/train": ["cron 0 2 * * 1 (UTC)"],
        "sluice-pipeline/rotten-tomatoes-pipeline": ["cron 0 3 * * * (UTC)"],
    }
    if (Path(__file__).resolve().parents[2] / "flows" / "annotate.py").is_file():
        expected["sluice-annotation-sync/annotation-sync"] = ["every 15 min"]
    for name, schedules in expected.items():
        assert name in by_name, f"{name} was not deployed; deployed: {sorted(by_name)}"
        assert by_name[name].schedules == schedules
        assert by_name[name].parameters["config_path"] == "configs/rotten_tomatoes.yaml"
    assert by_name["sluice-ingest/ingest"].parameters["dask"] is False
    assert served.pool_created
    assert served.skipped == deployable_names(Path(__file__).resolve().parents[2])[1]


def test_serving_again_reuses_the_server_and_the_pool(served: Served) -> None:
    home = Home.resolve(served.env["SLUICE_HOME"])
    again = prepare_deployments(home, Path(__file__).resolve().parents[2])
    assert again.server.pid == served.server.pid
    assert not again.pool_created
    assert {d.name for d in again.deployments} == {d.name for d in served.deployments}


def test_a_worker_runs_the_ingest_deployment_to_completion(
    served: Served, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with SyncPrefectClient(served.api_url) as client:
        for deployment in client.read_deployments():  # no scheduled run may sneak in beside ours
            client.pause_deployment(deployment.id)

    config = make_config(demo__rows=300)
    home = tmp_path / "run-home"
    with temporary_settings({PREFECT_API_URL: served.api_url}):
        flow_run = run_deployment(
            "sluice-ingest/ingest", parameters={"config_path": str(config), "home": str(home)}, timeout=0
        )
    repo = Path(__file__).resolve().parents[2]
    worker = subprocess.run(
        [*worker_command(WORK_POOL), "--run-once"],
        cwd=tmp_path,  # the pull step, not the worker's folder, must put the run at the repository root
        env=served.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    with SyncPrefectClient(served.api_url) as client:
        finished = client.read_flow_run(flow_run.id)
    assert finished.state is not None
    log = f"{finished.state}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    assert finished.state.is_completed(), log
    manifests = list((home / "snapshots").glob("*/manifest.json"))
    assert len(manifests) == 1, "the run did not write its snapshot under the home it was given"
    assert (home / "raw" / "rotten_tomatoes" / "rotten_tomatoes.csv").is_file()
    assert served.env["SLUICE_PROJECT_DIR"] == str(repo)


def test_sluice_ui_serves_prefect_and_mlflow_and_stops_them_on_ctrl_c(tmp_path: Path) -> None:
    import json
    import os
    import queue
    import signal
    import sys
    import threading
    import time

    from sluice.services import http_ok

    home = tmp_path / "ui-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["SLUICE_HOME"] = str(home)
    ui = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "ui", "--no-labelstudio"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in ui.stdout or []], daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while not any("Ctrl-C" in line for line in output):
            assert time.monotonic() < deadline and ui.poll() is None, "".join(output)
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        urls = {line.split()[0]: line.split()[1] for line in output if line.startswith("  ")}
        prefect_url, mlflow_url = urls["Prefect"], urls["MLflow"]
        assert mlflow_url.endswith("/#/models"), "MLflow should open on the registered models page"
        mlflow_base = mlflow_url.removesuffix("/#/models")
        assert http_ok(f"{prefect_url}/api/health") and http_ok(f"{mlflow_base}/health")
        pids = [json.loads(p.read_text())["pid"] for p in (home / "services").glob("*.json")]
        assert len(pids) == 2

        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=60) == 0
    finally:
        if ui.poll() is None:
            ui.kill()
            stop_service(Home.resolve(home), "prefect")
            stop_service(Home.resolve(home), "mlflow")
    time.sleep(0.5)
    assert not http_ok(f"{prefect_url}/api/health") and not http_ok(f"{mlflow_base}/health")
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not list((home / "services").glob("*.json")), "stopped services are still recorded"
