"""Local services on loopback: start in the background, remember, reuse, stop.

State files under `<home>/services/<name>.json` record the pid and URL, so a second
`sluice run` reuses the Prefect server the first one started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sluice.home import DATABASE_URL_ENV, DatabaseService, Home
from sluice.processes import LOOPBACK, free_port, pid_alive
from tasks.db_urls import driver_url, expand_url


class ServiceError(RuntimeError):
    """A local service did not come up; the message points at its log."""


class PortTakenError(ServiceError):
    """Another program answered on the port the service was started on (a race for a free port)."""


@dataclass
class Service:
    name: str
    pid: int
    url: str
    health_url: str
    log: str

    def healthy(self) -> bool:
        return pid_alive(self.pid) and http_ok(self.health_url)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs we built
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _state_path(home: Home, name: str) -> Path:
    return home.root / "services" / f"{name}.json"


def read_service(home: Home, name: str) -> Service | None:
    """The recorded service when it is still alive and healthy."""
    path = _state_path(home, name)
    if not path.is_file():
        return None
    try:
        service = Service(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
    return service if service.healthy() else None


def start_service(
    home: Home,
    name: str,
    command: list[str],
    *,
    url: str,
    health_url: str,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    port: int | None = None,
) -> Service:
    """Start `command` detached, wait for `health_url`, and record it.

    With `port`, the answer must come from the started process (or its children) listening there:
    two projects starting at once may pick the same free port, and the loser must not adopt the
    winner's server.

    Raises:
        PortTakenError: another program answers on `port`.
        ServiceError: it exited or did not answer within `timeout` seconds.
    """
    home.logs.mkdir(parents=True, exist_ok=True)
    log_path = home.logs / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own command line
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # survives the CLI; stopped with `sluice stop`
        )
    service = Service(name=name, pid=process.pid, url=url, health_url=health_url, log=str(log_path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{name} exited with code {process.returncode} while starting; see {log_path}")
        if http_ok(health_url):
            if port is not None and not _listens(process.pid, port):
                process.terminate()
                raise PortTakenError(f"{name}: another program answers on port {port}")
            path = _state_path(home, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(service)))
            return service
        time.sleep(0.5)
    process.terminate()
    raise ServiceError(f"{name} did not become healthy at {health_url} within {timeout:.0f} s; see {log_path}")


def _listens(pid: int, port: int) -> bool:
    """Whether `pid` or one of its children listens on `port`."""
    import psutil

    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
                    return True
    except psutil.Error:
        return False
    return False


def start_on_a_free_port(
    home: Home, name: str, command: Callable[[int], list[str]], *, preferred: int, health_path: str, **kwargs: Any
) -> Service:
    """`start_service` on `preferred` when free, else on a port the OS picks; again when another program wins it."""
    port = free_port(preferred)
    for _ in range(3):
        url = f"http://{LOOPBACK}:{port}"
        try:
            return start_service(home, name, command(port), url=url, health_url=url + health_path, port=port, **kwargs)
        except PortTakenError:
            port = free_port()
    raise ServiceError(f"{name}: another program took each free port it was started on; try again")


def stop_service(home: Home, name: str, *, grace: float = 15.0) -> bool:
    """SIGTERM the recorded service (then SIGKILL); True when something was stopped."""
    path = _state_path(home, name)
    if not path.is_file():
        return False
    try:
        service = Service(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        path.unlink()
        return False
    path.unlink()
    if not pid_alive(service.pid):
        return False
    try:
        os.killpg(service.pid, signal.SIGTERM)
    except OSError:
        os.kill(service.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(service.pid):
        time.sleep(0.2)
        try:
            os.waitpid(service.pid, os.WNOHANG)
        except ChildProcessError:
            pass
    if pid_alive(service.pid):
        os.killpg(service.pid, signal.SIGKILL)
    return True


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def database_env(home: Home, service: DatabaseService, variable: str, *, driver: str) -> dict[str, str]:
    """`{variable: URL}` for a server process when its PostgreSQL database is configured, else nothing.

    The URL, password included, goes only into the server's environment: never a command line, log or record.
    """
    configured = home.database_url(service)
    if configured is None:
        return {}
    return {variable: driver_url(expand_url(configured, where=f"${DATABASE_URL_ENV[service]}"), driver)}


def ensure_prefect_server(home: Home, *, port: int = 4200) -> Service:
    """The project's Prefect server (PostgreSQL when configured, else SQLite here), started when not running."""
    running = read_service(home, "prefect")
    if running:
        return running
    env = {k: v for k, v in home.service_env().items() if k.startswith("PREFECT_")}
    env.pop("PREFECT_API_URL", None)
    # This name wins over the PREFECT_API_DATABASE_CONNECTION_URL (SQLite) that service_env sets.
    env |= database_env(home, "prefect", "PREFECT_SERVER_DATABASE_CONNECTION_URL", driver="asyncpg")
    return start_on_a_free_port(
        home,
        "prefect",
        lambda chosen: [
            _bin("prefect"),
            "server",
            "start",
            "--host",
            LOOPBACK,
            "--port",
            str(chosen),
            "--analytics-off",
        ],
        preferred=port,
        health_path="/api/health",
        env=env,
        timeout=180,
    )


def ensure_mlflow_ui(home: Home, tracking_uri: str, *, port: int = 5000) -> Service:
    """An MLflow UI over the project's tracking store (`tracking_uri` may name `${VAR}`s)."""
    running = read_service(home, "mlflow")
    if running:
        return running
    home.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    # Through the environment, not argv: a command line (and the password in it) is visible to `ps`.
    store = driver_url(expand_url(tracking_uri, where="the MLflow tracking URI"), "psycopg")
    return start_on_a_free_port(
        home,
        "mlflow",
        lambda chosen: [
            _bin("mlflow"),
            "server",
            "--default-artifact-root",
            home.mlflow_artifacts.as_uri(),
            "--host",
            LOOPBACK,
            "--port",
            str(chosen),
            "--workers",
            "1",
        ],
        preferred=port,
        health_path="/health",
        env={"MLFLOW_BACKEND_STORE_URI": store, "MLFLOW_TRACKING_URI": store},
        timeout=180,
    )
