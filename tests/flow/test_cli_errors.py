"""`sluice run` on bad input and with a service going away, run as a user runs it (a subprocess, a temp home).

Each failure ends with one message naming the file, column or setting and the fix, no traceback on the
terminal, the traceback in the log file the message names, and no retry of a deterministic error.
The runs share the session's Prefect server; the bad files are a few bytes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.steps import retry_on_io
from sluice.cli import EXIT_BAD_INPUT, EXIT_SERVICE
from sluice.home import Home
from sluice.labelstudio_server import LabelStudioSettings, RunningServer, start_server, stop_server
from sluice.services import free_port
from tasks.ingest import IngestError

SLUICE = str(Path(sys.executable).with_name("sluice"))
REPO = Path(__file__).resolve().parents[2]
HEADER = b"text,movie_name,category\n"

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def user_env(prefect_server: None, tmp_path: Path) -> dict[str, str]:
    """A user's shell (no Prefect, MLflow or sluice settings) pointed at the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "XDG_", "SLUICE_"))}
    (tmp_path / "user-home").mkdir()
    return env | {
        "HOME": str(tmp_path / "user-home"),
        "SLUICE_HOME": str(tmp_path / "home"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }


def _sluice(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _task_runs(stderr: str) -> dict[str, list[Any]]:
    """Task runs of the flow run the message links to, by task name, through the Prefect API."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found = re.search(r"Prefect UI: \S+/runs/flow-run/([0-9a-f-]{36})", stderr)
    assert found, stderr
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(found[1])])))
    by_name: dict[str, list[Any]] = {}
    for run in runs:
        by_name.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return by_name


def _log_named_in(stderr: str, cwd: Path) -> str:
    found = re.search(r"^  full log: (\S+)$", stderr, re.MULTILINE)
    assert found, stderr
    path = cwd / found[1]
    assert path.is_file(), f"{path} is named in the message but does not exist"
    return path.read_text()


@dataclass(frozen=True)
class Case:
    content: bytes
    overrides: dict[str, Any]
    expected: list[str]
    failing_task: str | None  # None: no task runs (checked before any server or flow starts)
    exit_code: int = EXIT_BAD_INPUT
    names: str = "file"  # what the message must name: the data "file", the "config", or nothing more ("")
    env: dict[str, str] = field(default_factory=dict)


ROW = HEADER + b"good,m1,fresh\n"
CLOSED = f"http://127.0.0.1:{free_port()}"  # nothing listens there
CASES = {
    "empty": Case(b"", {}, ["is empty (0 bytes)", "source.path"], "ingest"),
    "header-only": Case(HEADER, {}, ["has no data rows", "source.path"], "ingest"),
    "latin-1": Case(HEADER + "café,m1,fresh\n".encode("latin-1"), {}, ["not valid utf-8", "source.encoding"], "ingest"),
    "missing-column": Case(
        b"review,movie_name,category\ngood,m1,fresh\nbad,m2,rotten\n",
        {},
        ['column "text" (columns.text) is missing', "Fix columns.text"],
        "validate-raw",
    ),
    "broken-config": Case(ROW, {"labels__classes": ["fresh"]}, ["labels.classes"], None, names="config"),
    "missing-suite": Case(
        ROW,
        {"expectations__raw_suite": "/nowhere/reviews_raw.json"},
        ["expectations.raw_suite", "/nowhere/reviews_raw.json", "does not exist; fix the path"],
        None,
        names="config",
    ),
    "prefect-server-down": Case(
        ROW,
        {},
        [f"the Prefect server at {CLOSED} is not answering: `sluice stop`"],
        None,
        exit_code=EXIT_SERVICE,
        names="",
        env={"PREFECT_API_URL": f"{CLOSED}/api"},
    ),
}


def _check_case(name: str, case: Case, done: subprocess.CompletedProcess[str], cwd: Path, named: str) -> None:
    where = f"case {name}: {done.stderr[-3000:]}"
    assert done.returncode == case.exit_code, where
    message = done.stderr[done.stderr.index("\nsluice: ") :]
    assert all(fragment in message for fragment in case.expected), where
    assert named in message, where
    assert "Traceback" not in done.stderr + done.stdout, where
    log = _log_named_in(done.stderr, cwd)
    assert "Traceback (most recent call last)" in log and case.expected[0] in log, where
    if case.failing_task is None:
        assert "Prefect UI" not in done.stderr, where
        return
    (run,) = _task_runs(done.stderr)[case.failing_task]
    assert run.state.is_failed() and run.run_count == 1, where  # bad input is not retried


def test_bad_input_ends_once_with_one_clear_message(
    make_config: Callable[..., Path], user_env: dict[str, str], tmp_path: Path
) -> None:
    runs = {}
    for name, case in CASES.items():
        data = tmp_path / f"{name}.csv"
        data.write_bytes(case.content)
        config = make_config(source__path=str(data), demo=None, registry__model_name=f"rt-{name}", **case.overrides)
        named = {"file": data.name, "config": str(config), "": ""}[case.names]
        runs[name] = (["run", "--config", str(config)], user_env | case.env, named)
    # One run per core at a time: a `sluice run` spends most of its time importing, on one core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = {name: pool.submit(_sluice, args, env, tmp_path) for name, (args, env, _) in runs.items()}
    for name, future in done.items():
        _check_case(name, CASES[name], future.result(), tmp_path, runs[name][2])
    assert list((tmp_path / "user-home").iterdir()) == []  # the logs went under the project home


def test_io_failures_are_retried_and_bad_input_is_not() -> None:
    from prefect import flow, task

    errors = {"bad input": IngestError("reviews.csv is empty"), "I/O": ConnectionResetError("the server went away")}
    calls: list[str] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_on_io)
    def read_source(kind: str) -> None:
        calls.append(kind)
        raise errors[kind]

    @flow
    def attempt(kind: str) -> None:
        read_source(kind)

    for kind, error in errors.items():
        with pytest.raises(type(error)):
            attempt(kind)
    assert calls == ["bad input", "I/O", "I/O", "I/O"]


# -- Label Studio stopped during sync-out ---------------------------------------------------------------
def _project_tasks(url: str, token: str, identifier: str) -> list[str]:
    """item_ids of the tasks in the project tagged `identifier` (empty while it does not exist)."""
    headers = {"Authorization": f"Token {token}"}
    projects = httpx.get(f"{url}/api/projects", params={"page_size": 100}, headers=headers, timeout=10).json()
    for project in projects.get("results", []):
        if (project.get("description") or "").split("\n", 1)[0] == f"sluice-project: {identifier}":
            tasks = httpx.get(
                f"{url}/api/tasks",
                params={"project": project["id"], "page_size": 1000, "fields": "all"},
                headers=headers,
                timeout=30,
            ).json()
            return [str(t["data"]["item_id"]) for t in tasks.get("tasks", [])]
    return []


@pytest.fixture
def home_labelstudio(
    tmp_path: Path, labelstudio_settings: LabelStudioSettings, labelstudio_template: Path
) -> Iterator[RunningServer]:
    """The home's own Label Studio, as `sluice labelstudio start` leaves it (started from the test template)."""
    home = Home(tmp_path / "home")
    server = start_server(labelstudio_settings, home, template=labelstudio_template)
    try:
        yield server
    finally:
        stop_server(home)


@pytest.mark.slow
@pytest.mark.labelstudio
def test_label_studio_stopped_during_sync_out_ends_clearly_and_the_rerun_resumes(
    make_config: Callable[..., Path], user_env: dict[str, str], tmp_path: Path, home_labelstudio: RunningServer
) -> None:
    server = home_labelstudio
    env = user_env | {"SLUICE_LABEL_STUDIO_TOKEN": server.token}
    identifier = "cli-outage"
    config = make_config(
        base="rotten_tomatoes",
        demo__rows=60,
        expectations__clean_suite=None,  # its row-count floor (100) is for the real demo
        annotation__label_config=str(REPO / "label_config" / "text_classification.xml"),
        annotation__project_identifier=identifier,
        annotation__simulate=False,
        annotation__gold=None,  # gold items are tasks too; this test counts the data's items only
        annotation__batch_size=1,  # one request per item: the server goes away part of the way through
        registry__model_name="rt-outage",
    )
    run = subprocess.Popen(
        [SLUICE, "run", "--config", str(config)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    while not _project_tasks(server.url, server.token, identifier):
        if run.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the run never reached sync-out: {run.communicate()[1].decode()[-3000:]}")
        time.sleep(0.1)
    server.stop()
    stdout, stderr = (stream.decode() for stream in run.communicate(timeout=300))

    assert run.returncode == EXIT_SERVICE, stderr[-3000:]
    message = stderr[stderr.index("\nsluice: ") :]
    assert f"Label Studio at {server.url}" in message
    assert "start it with `sluice labelstudio start`" in message and "it resumes where this run stopped" in message
    assert "Traceback" not in stdout + stderr
    assert "LabelStudioUnreachableError" in _log_named_in(stderr, tmp_path)
    (sync_out,) = _task_runs(stderr)["sync-out"]
    assert sync_out.run_count == 3  # I/O is retried (twice) before the run gives up

    # What the message says to do: start Label Studio, run again.
    assert _sluice(["labelstudio", "start"], env, tmp_path).returncode == 0
    url = json.loads((tmp_path / "home" / "labelstudio" / "server.json").read_text())["url"]  # a new port
    imported_before = _project_tasks(url, server.token, identifier)
    again = _sluice(["run", "--config", str(config)], env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    awaiting = int(re.search(r"(\d+) awaiting labels", again.stdout)[1])  # type: ignore[index]
    assert 0 < len(imported_before) < awaiting  # the first run stopped part of the way through
    item_ids = _project_tasks(url, server.token, identifier)
    assert len(item_ids) == len(set(item_ids)) == awaiting  # every item once: no duplicate tasks
