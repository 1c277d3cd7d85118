"""Deployments: the local Prefect server, the `sluice-local` process work pool, `prefect.yaml`, a worker.

`sluice serve` is `serve_deployments`: start or reuse the Prefect server under the project home, create
the work pool when missing, deploy every entry of `prefect.yaml` whose flow file exists, then run a
worker that picks up the scheduled and on-demand runs. The worker runs each flow in a subprocess at the
repository root (the `set_working_directory` pull step reads `SLUICE_PROJECT_DIR`) with the project
home's environment, so runs write to the same home and MLflow store as `sluice run`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from sluice.home import Home
from sluice.services import LOOPBACK, Service, ensure_prefect_server, free_port, start_service

WORK_POOL = "sluice-local"
PROJECT_DIR_ENV = "SLUICE_PROJECT_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_SERVICE = "worker"


class DeployError(RuntimeError):
    """A deployment step failed; the message carries the command's output and what to check."""


@dataclass(frozen=True)
class DeploymentInfo:
    """A deployment as the Prefect server has it."""

    name: str
    """`flow-name/deployment-name`, what `prefect deployment run` takes."""
    schedules: list[str]
    parameters: dict[str, Any]
    url: str


def _prefect_bin() -> str:
    candidate = Path(sys.executable).with_name("prefect")
    return str(candidate) if candidate.exists() else "prefect"


def prefect_env(home: Home, api_url: str, project_dir: Path = REPO_ROOT) -> dict[str, str]:
    """Environment for the Prefect CLI and the worker: the home's settings, the API, the project root."""
    env = {**os.environ, **home.service_env()}
    env["PREFECT_API_URL"] = api_url
    env[PROJECT_DIR_ENV] = str(project_dir.resolve())
    # The flows' own logs are what a user reads in the UI; the CLI's progress bars are noise in a log file.
    env.setdefault("PREFECT_CLI_COLORS", "false")
    return env


def ensure_work_pool(api_url: str, name: str = WORK_POOL) -> bool:
    """Create the process work pool `name` when it is missing; True when it was created."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with SyncPrefectClient(api_url) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        return True


def deployable_names(project_dir: Path = REPO_ROOT) -> tuple[list[str], list[str]]:
    """Names of the `prefect.yaml` deployments whose flow file exists, and of those whose file is missing."""
    spec = yaml.safe_load((project_dir / "prefect.yaml").read_text()) or {}
    ready: list[str] = []
    missing: list[str] = []
    for entry in spec.get("deployments", []):
        file = str(entry.get("entrypoint", "")).split(":", 1)[0]
        (ready if (project_dir / file).is_file() else missing).append(str(entry["name"]))
    return ready, missing


def deploy_all(env: dict[str, str], project_dir: Path = REPO_ROOT, *, timeout_s: float = 600) -> list[str]:
    """`prefect --no-prompt deploy` each `prefect.yaml` deployment whose flow file exists; returns the names.

    Raises:
        DeployError: prefect.yaml is missing or `prefect deploy` failed (its output is in the message).
    """
    if not (project_dir / "prefect.yaml").is_file():
        raise DeployError(f"no prefect.yaml in {project_dir}; run `sluice serve` from the repository root")
    ready, missing = deployable_names(project_dir)
    if not ready:
        raise DeployError(f"no deployment in {project_dir / 'prefect.yaml'} has an existing flow file")
    selection = ["--all"] if not missing else [arg for name in ready for arg in ("--name", name)]
    command = [_prefect_bin(), "--no-prompt", "deploy", *selection]
    done = subprocess.run(  # noqa: S603 - our own command line
        command, cwd=project_dir, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        raise DeployError(
            f"`prefect deploy` failed (exit {done.returncode}) in {project_dir}; fix prefect.yaml or the "
            f"flow it names:\n{output}"
        )
    return ready


def _describe_schedule(schedule: Any) -> str:
    if getattr(schedule, "cron", None):
        return f"cron {schedule.cron} ({schedule.timezone or 'UTC'})"
    interval = getattr(schedule, "interval", None)
    if isinstance(interval, timedelta):
        minutes = interval.total_seconds() / 60
        return f"every {minutes:g} min" if minutes < 120 else f"every {minutes / 60:g} h"
    if getattr(schedule, "rrule", None):
        return f"rrule {schedule.rrule}"
    return str(schedule)


def list_deployments(api_url: str, ui_url: str) -> list[DeploymentInfo]:
    """Every deployment on the server with its active schedules, sorted by name."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api_url) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        found = [
            DeploymentInfo(
                name=f"{flows.get(d.flow_id, '?')}/{d.name}",
                schedules=[_describe_schedule(s.schedule) for s in d.schedules if s.active],
                parameters=dict(d.parameters),
                url=f"{ui_url}/deployments/deployment/{d.id}",
            )
            for d in client.read_deployments()
        ]
    return sorted(found, key=lambda d: d.name)


def worker_command(pool: str = WORK_POOL) -> list[str]:
    return [_prefect_bin(), "worker", "start", "--pool", pool, "--type", "process"]


def start_worker_detached(home: Home, env: dict[str, str], pool: str = WORK_POOL) -> Service:
    """A worker in the background, recorded as the `worker` service (its health check on a loopback port)."""
    port = free_port()
    worker_env = {
        **env,
        "PREFECT_WORKER_WEBSERVER_HOST": LOOPBACK,
        "PREFECT_WORKER_WEBSERVER_PORT": str(port),
    }
    return start_service(
        home,
        WORKER_SERVICE,
        [*worker_command(pool), "--with-healthcheck"],
        url=f"http://{LOOPBACK}:{port}",
        health_url=f"http://{LOOPBACK}:{port}/health",
        env=worker_env,
        timeout=120,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_worker_foreground(env: dict[str, str], pool: str = WORK_POOL, project_dir: Path = REPO_ROOT) -> int:
    """Run a worker until Ctrl-C (or SIGTERM); returns its exit code (0 after a Ctrl-C)."""
    worker = subprocess.Popen(  # noqa: S603
        worker_command(pool),
        cwd=project_dir,
        env=env,
        # The worker stops on SIGINT by re-raising it at itself; started from a shell that ignores SIGINT
        # (a background job), it would inherit the ignore and never stop. Give it the default.
        preexec_fn=_default_sigint,
    )

    def _forward(signum: int, _frame: object) -> None:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    previous = {sig: signal.signal(sig, _forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            code = worker.wait()
        except KeyboardInterrupt:
            code = worker.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if worker.poll() is None:  # pragma: no cover - only when wait() itself was interrupted twice
            worker.kill()
    # A worker stopped by Ctrl-C exits non-zero; that is the normal way to stop `sluice serve`.
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM, 130, 143) else code


@dataclass
class Served:
    """What `prepare_deployments` set up: the server, the pool, the deployments, the worker's environment."""

    server: Service
    api_url: str
    pool_created: bool
    deployed: list[str]
    skipped: list[str]
    deployments: list[DeploymentInfo]
    env: dict[str, str]


def prepare_deployments(home: Home, project_dir: Path = REPO_ROOT) -> Served:
    """Start/reuse the Prefect server, create the work pool, deploy `prefect.yaml`; no worker yet.

    Raises:
        DeployError: `prefect deploy` failed.
        ServiceError: the Prefect server did not start (see its log under the home).
    """
    server = ensure_prefect_server(home)
    api_url = f"{server.url}/api"
    env = prefect_env(home, api_url, project_dir)
    created = ensure_work_pool(api_url)
    deployed = deploy_all(env, project_dir)
    _, skipped = deployable_names(project_dir)
    return Served(
        server=server,
        api_url=api_url,
        pool_created=created,
        deployed=deployed,
        skipped=skipped,
        deployments=list_deployments(api_url, server.url),
        env=env,
    )
