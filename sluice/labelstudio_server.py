"""Run a local Label Studio server, headless, with all of its state under the project home.

Label Studio pins Django and friends in ways that clash with Prefect, so it lives in its own
virtual environment (`.venv-labelstudio`, made by `make labelstudio`) and sluice talks to it
only over HTTP. This module starts and stops that server; `sluice.labelstudio` talks to it.

The first start of a fresh data dir runs the database migrations (~85 s on 2 cores); a
restart takes ~11 s. `initialise_data_dir` makes a data dir once so tests can copy it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sluice.home import DATABASE_URL_ENV, Home
from sluice.labelstudio_settings import (
    VENV_ENV_VAR,
    LabelStudioServerError,
    LabelStudioSettings,
)
from sluice.processes import free_port, pid_alive
from tasks.db_urls import expand_url

URL_ENV_VAR = "SLUICE_LABEL_STUDIO_URL"  # an existing server; otherwise sluice starts its own on loopback
_DB_FILE = "label_studio.sqlite3"
_INIT_MARKER = ".sluice-initialised.json"
_INIT_PENDING = ".sluice-initialising"
_PASSWORD_MARKER = ".sluice-admin-password.sha256"


@dataclass
class RunningServer:
    """A Label Studio server on loopback: its URL, admin token, process and files."""

    url: str
    token: str = field(repr=False)
    pid: int
    data_dir: Path
    log_path: Path
    state_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (Label Studio ignores SIGINT when not on a terminal), then SIGKILL."""
        if pid_alive(self.pid):
            _signal_group(self.pid, signal.SIGTERM)
            if not self._wait_exit(timeout_s):
                _signal_group(self.pid, signal.SIGKILL)
                self._wait_exit(10.0)
        if self.state_path is not None and self.state_path.is_file():
            state = _read_state(self.state_path)
            if state and state.get("pid") == self.pid:
                self.state_path.unlink(missing_ok=True)

    def _wait_exit(self, timeout_s: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout=timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(self.pid):
                return True
            time.sleep(0.2)
        return False


def server_env(settings: LabelStudioSettings, home: Home, *, port: int | None, data_dir: Path) -> dict[str, str]:
    """The environment of the server process (and its management commands): headless, offline, no $HOME."""
    base = home.labelstudio
    env = dict(os.environ)
    # Unprefixed USERNAME/PASSWORD/PORT/HOST/DEBUG are read as fallbacks: drop stray ones.
    for name in ("USERNAME", "PASSWORD", "PORT", "HOST", "DEBUG", "LABEL_STUDIO_API_KEY"):
        env.pop(name, None)
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": settings.username,
            "LABEL_STUDIO_PASSWORD": settings.resolve_password(home),
            # The token and legacy-token switch must be present at the FIRST init of a data dir.
            "LABEL_STUDIO_USER_TOKEN": settings.resolve_token(home),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_DEBUG": "false",
            "LABEL_STUDIO_TASK_LOCK_TTL": str(settings.task_lock_ttl),
            # No calls to outside hosts.
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            # Label Studio writes a user_id file under the config home; keep it in ours.
            "HOME": str(base / "home"),
            "XDG_CONFIG_HOME": str(base / "config"),
            "XDG_DATA_HOME": str(base / "share"),
            "XDG_CACHE_HOME": str(base / "cache"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if port is not None:
        env |= {"LABEL_STUDIO_HOST": f"http://{settings.host}:{port}", "LABEL_STUDIO_PORT": str(port)}
    if not settings.allow_remote:
        # Django answers any Host header by default: a web page could rebind its own name to
        # 127.0.0.1 and reach the server from an annotator's browser. Loopback names only.
        env["LABEL_STUDIO_ALLOWED_HOSTS"] = ",".join(dict.fromkeys([settings.host, "127.0.0.1", "localhost", "[::1]"]))
    env.update(_database_env(home))
    return env


def _database_env(home: Home) -> dict[str, str]:
    """Label Studio's Django database: PostgreSQL when `$SLUICE_LABELSTUDIO_DATABASE_URL` is set, else SQLite.

    Label Studio 1.23 reads `DJANGO_DB` (`default` is PostgreSQL) and `POSTGRE_NAME/USER/PASSWORD/HOST/PORT`
    (label_studio/core/settings/base.py and label_studio.py); the password goes only into its environment.
    """
    configured = home.database_url("labelstudio")
    if configured is None:
        return {"DJANGO_DB": "sqlite"}  # explicit: a stray DJANGO_DB in the shell must not move the database
    parts = urlsplit(expand_url(configured, where=f"${DATABASE_URL_ENV['labelstudio']}"))
    return {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRE_USER": unquote(parts.username or "postgres"),
        "POSTGRE_PASSWORD": unquote(parts.password or ""),
        "POSTGRE_HOST": parts.hostname or "localhost",
        "POSTGRE_PORT": str(parts.port or 5432),
    }


def start_server(settings: LabelStudioSettings, home: Home, *, template: Path | None = None) -> RunningServer:
    """Start Label Studio headless on loopback and wait until /health answers UP.

    Args:
        template: a data dir made by `initialise_data_dir`, copied in when the data dir is
            empty (start ~13 s instead of ~85 s). It must have been made with the same token.

    Raises:
        LabelStudioServerError: the venv is missing, the server exits or is not healthy in
            time (the message points at the log), or it rejects the admin token.
    """
    executable = _label_studio_executable(settings)
    data_dir = settings.resolve_data_dir(home)
    token = settings.resolve_token(home)
    if template is not None and not (data_dir / _DB_FILE).exists():
        _copy_template(template, data_dir, token)
    # The admin password is fixed at a database's first init: a database made with another one
    # (an older fixed default, or a changed setting) gets the current password once it is up.
    password_marker = data_dir / _PASSWORD_MARKER
    password_sha = _fingerprint(settings.resolve_password(home))
    stale_password = (data_dir / _DB_FILE).exists() and (
        not password_marker.is_file() or password_marker.read_text().strip() != password_sha
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    home.logs.mkdir(parents=True, exist_ok=True)
    for sub in ("home", "config", "share", "cache"):
        (home.labelstudio / sub).mkdir(parents=True, exist_ok=True)
    # Label Studio silently moves to the next port when the asked one is busy, so we pick a
    # free one ourselves and poll exactly that one.
    port = settings.port or free_port(host=settings.host)
    url = f"http://{settings.host}:{port}"
    if not _port_free(settings.host, port):
        # Label Studio would silently move to the next port and we would poll the wrong one.
        raise LabelStudioServerError(
            f"port {port} on {settings.host} is busy; stop what uses it (`sluice labelstudio stop` if it is "
            "ours), or leave `port` unset to pick a free one"
        )
    log_path = home.logs / "labelstudio.log"
    command = [
        str(executable), "start", "--no-browser",
        "--internal-host", settings.host, "--port", str(port), "--data-dir", str(data_dir),
    ]  # fmt: skip
    with log_path.open("ab") as log:
        log.write(f"\n=== sluice: starting Label Studio at {url} (data dir {data_dir})\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            env=server_env(settings, home, port=port, data_dir=data_dir),
            cwd=home.labelstudio,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals the whole group
        )
    state_path = home.labelstudio / "server.json"
    server = RunningServer(
        url=url, token=token, pid=process.pid, data_dir=data_dir, log_path=log_path,
        state_path=state_path, _process=process,
    )  # fmt: skip
    try:
        _wait_healthy(server, process, settings.start_timeout_s)
        _check_token(url, token, data_dir)
        if home.database_url("labelstudio") is None:
            _use_wal(data_dir / _DB_FILE)
        if stale_password:
            set_user_password(settings, home, settings.username, settings.resolve_password(home))
    except BaseException:
        server.stop()
        raise
    password_marker.write_text(password_sha)
    _write_state(state_path, server)
    return server


def ensure_server(settings: LabelStudioSettings, home: Home) -> RunningServer:
    """Reuse the healthy server recorded under the home, or start one."""
    state_path = home.labelstudio / "server.json"
    state = _read_state(state_path)
    data_dir = settings.resolve_data_dir(home)
    if (
        state
        and state.get("data_dir") == str(data_dir)
        and pid_alive(int(state.get("pid", -1)))
        and _healthy(str(state.get("url")))
    ):
        return RunningServer(
            url=str(state["url"]), token=settings.resolve_token(home), pid=int(state["pid"]),
            data_dir=data_dir, log_path=Path(str(state.get("log_path", home.logs / "labelstudio.log"))),
            state_path=state_path,
        )  # fmt: skip
    state_path.unlink(missing_ok=True)
    return start_server(settings, home)


def resolve_url(settings: LabelStudioSettings, home: Home) -> str:
    """The Label Studio to use: `$SLUICE_LABEL_STUDIO_URL`, else this home's own server (started if needed)."""
    return os.environ.get(URL_ENV_VAR) or ensure_server(settings, home).url


def is_home_server(home: Home, url: str) -> bool:
    """Whether `url` is the server this home runs (so its database, and management commands, are at hand)."""
    state = _read_state(home.labelstudio / "server.json")
    return bool(state and str(state.get("url", "")).rstrip("/") == url.rstrip("/") and pid_alive(int(state["pid"])))


def stop_server(home: Home) -> bool:
    """Stop the server recorded under the home; False when none was running."""
    state_path = home.labelstudio / "server.json"
    state = _read_state(state_path)
    if not state or not pid_alive(int(state.get("pid", -1))):
        state_path.unlink(missing_ok=True)
        return False
    RunningServer(
        url=str(state["url"]), token="", pid=int(state["pid"]), data_dir=Path(str(state["data_dir"])),
        log_path=Path(str(state.get("log_path", ""))), state_path=state_path,
    ).stop()  # fmt: skip
    return True


def initialise_data_dir(settings: LabelStudioSettings, home: Home) -> Path:
    """Run the first start (migrations, admin user, token) once, stop, and mark the data dir.

    Returns the data dir, ready to be passed as `template=` to `start_server`.
    """
    data_dir = settings.resolve_data_dir(home)
    version = _server_version(settings)
    if is_initialised(data_dir, settings.resolve_token(home), version=version):
        return data_dir
    if (data_dir / _DB_FILE).exists():
        made_here = (data_dir / _INIT_MARKER).is_file() or (data_dir / _INIT_PENDING).is_file()
        if not made_here:
            raise LabelStudioServerError(
                f"{data_dir} holds a Label Studio database that initialise_data_dir did not make; refusing "
                "to overwrite it: give the template its own, empty data dir"
            )
        # Interrupted, or made with another token or server version: start over.
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / _INIT_PENDING).touch()
    server = start_server(settings, home)
    server.stop()
    marker = {"token_sha256": _fingerprint(server.token), "label_studio": version}
    (data_dir / _INIT_MARKER).write_text(json.dumps(marker))
    (data_dir / _INIT_PENDING).unlink()
    return data_dir


def is_initialised(data_dir: Path, token: str, *, version: str | None = None) -> bool:
    """Whether `data_dir` was initialised by `initialise_data_dir` with this token (and version)."""
    marker = data_dir / _INIT_MARKER
    # A data dir made before the admin password was recorded is made again (once).
    if not marker.is_file() or not (data_dir / _DB_FILE).is_file() or not (data_dir / _PASSWORD_MARKER).is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if version is not None and recorded.get("label_studio") != version:
        return False
    return bool(recorded.get("token_sha256") == _fingerprint(token))


def read_user_token(data_dir: Path, email: str) -> str:
    """An annotator's API token, read from the server's own database (demo and tests only).

    Community edition has no endpoint that hands out another user's token, so a simulated
    annotator who must pull tasks from the labelling stream as themselves needs this.
    """
    db = data_dir / _DB_FILE
    if not db.is_file():
        raise LabelStudioServerError(f"no Label Studio database at {db}; start the server first")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT t.key FROM authtoken_token t JOIN htx_user u ON u.id = t.user_id WHERE u.email = ?",
            (email,),
        ).fetchone()
    if row is None:
        raise LabelStudioServerError(
            f"Label Studio has no token for user {email}; create the user first (LabelStudioClient.ensure_users)"
        )
    return str(row[0])


def run_management_command(
    settings: LabelStudioSettings, home: Home, args: list[str], *, timeout_s: float = 180.0
) -> str:
    """Run `label-studio ARGS` with the server's environment (its database); returns stdout.

    Community has no API for some user administration (setting a password), and its own
    management commands are the supported way: they need the server's data dir, so they work
    for the server this home runs, not for a remote one.
    """
    data_dir = settings.resolve_data_dir(home)
    if not (data_dir / _DB_FILE).is_file():
        raise LabelStudioServerError(
            f"no Label Studio database at {data_dir}; start the server first (`sluice labelstudio start`)"
        )
    command = [str(_label_studio_executable(settings)), *args]
    home.labelstudio.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            command,
            env=server_env(settings, home, port=None, data_dir=data_dir),
            cwd=home.labelstudio,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise LabelStudioServerError(f"`label-studio {args[0]}` did not finish in {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-5:])
        raise LabelStudioServerError(f"`label-studio {args[0]}` exited with code {done.returncode}:\n{tail}")
    return done.stdout


def set_user_password(settings: LabelStudioSettings, home: Home, email: str, password: str) -> None:
    """Set a user's password on the home's server (`label-studio reset_password`, ~4 s).

    Community ignores the password of `POST /api/users/`; this management command is the one
    working way. It also ends the user's open browser sessions (Django ties them to the
    password hash).
    """
    out = run_management_command(settings, home, ["reset_password", "--username", email, "--password", password])
    if "not found" in out:
        raise LabelStudioServerError(f"Label Studio has no user {email}; create the account first")
    if "successfully changed" not in out and "same as current" not in out:
        raise LabelStudioServerError(f"`label-studio reset_password` for {email} said: {out.strip()[-300:]}")


def _label_studio_executable(settings: LabelStudioSettings) -> Path:
    venv = settings.resolve_venv()
    executable = venv / "bin" / "label-studio"
    if not executable.is_file():
        raise LabelStudioServerError(
            f"Label Studio's virtual environment is missing ({executable} not found); create it with "
            f"`make labelstudio` (pip install label-studio==1.23.2 into .venv-labelstudio), "
            f"or point ${VENV_ENV_VAR} at an existing one"
        )
    return executable


def _server_version(settings: LabelStudioSettings) -> str:
    site = settings.resolve_venv() / "lib"
    found = sorted(site.glob("python*/site-packages/label_studio-*.dist-info"))
    return found[-1].name.removeprefix("label_studio-").removesuffix(".dist-info") if found else "unknown"


def _copy_template(template: Path, data_dir: Path, token: str) -> None:
    if not is_initialised(template, token):
        raise LabelStudioServerError(
            f"{template} is not a Label Studio data dir initialised with this token; "
            "make it with initialise_data_dir(settings, home) using the same token"
        )
    if data_dir.exists():
        shutil.rmtree(data_dir)
    shutil.copytree(template, data_dir)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:  # noqa: S310 (loopback)
            return bool(json.loads(response.read()).get("status") == "UP")
    except (OSError, ValueError):
        return False


def _wait_healthy(server: RunningServer, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabelStudioServerError(
                f"Label Studio exited with code {process.returncode} before it was ready; "
                f"see the log at {server.log_path}:\n{_log_tail(server.log_path)}"
            )
        if _healthy(server.url):
            return
        time.sleep(0.5)
    raise LabelStudioServerError(
        f"Label Studio at {server.url} was not healthy after {timeout_s:.0f} s (a first start runs "
        f"migrations, ~85 s on 2 cores; raise start_timeout_s if the machine is busy); "
        f"see the log at {server.log_path}:\n{_log_tail(server.log_path)}"
    )


def _use_wal(db: Path) -> None:
    """Switch Label Studio's SQLite database to write-ahead logging (kept in the file, so once is enough).

    In SQLite's default rollback journal a writer blocks every reader, so the parallel per-task requests
    of an ActiveLab round (`LabelStudioClient.reopen_tasks`, `add_annotations`) and an annotator's page
    loads wait on each other; in WAL mode readers go on beside the one writer. A database that is busy
    right now keeps its mode: this is a speed-up, never a reason to fail a start.
    """
    try:
        with closing(sqlite3.connect(db, timeout=5.0)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass


def _check_token(url: str, token: str, data_dir: Path) -> None:
    request = urllib.request.Request(f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (loopback)
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise LabelStudioServerError(
                f"Label Studio at {url} rejects the admin token: the data dir {data_dir} was initialised "
                "with another one (the token is fixed at the first start). Set the original token in "
                "$SLUICE_LABEL_STUDIO_TOKEN, or move the data dir away to start fresh"
            ) from None
        raise


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        # Not a group leader (e.g. started by someone else): signal the process alone.
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(path: Path, server: RunningServer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"url": server.url, "pid": server.pid, "data_dir": str(server.data_dir), "log_path": str(server.log_path)}
        )
    )
