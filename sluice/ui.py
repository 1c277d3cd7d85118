"""`sluice ui`: the Prefect UI, the MLflow UI and Label Studio for the project home, until Ctrl-C.

Services already running for this home are reused and left running; the ones this command starts are
stopped when it ends (Ctrl-C or SIGTERM). Label Studio needs its own virtual environment
(`make labelstudio`); without it the other two still start.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sluice.home import Home
from sluice.services import ServiceError, ensure_mlflow_ui, ensure_prefect_server, read_service, stop_service


@dataclass
class OpenUi:
    """One UI: what to open, and how to stop it when this command started it."""

    name: str
    url: str
    started: bool
    stop: Callable[[], object] = field(repr=False)
    note: str = ""


@dataclass
class UiSession:
    uis: list[OpenUi]
    problems: list[str]

    def stop_started(self) -> list[str]:
        """Stop what this session started (newest first); returns their names."""
        stopped = []
        for ui in reversed(self.uis):
            if ui.started:
                ui.stop()
                stopped.append(ui.name)
        return stopped


def _prefect(home: Home) -> OpenUi:
    started = read_service(home, "prefect") is None
    server = ensure_prefect_server(home)
    return OpenUi("Prefect", server.url, started, lambda: stop_service(home, "prefect"))


def _mlflow(home: Home) -> OpenUi:
    tracking_uri = home.service_env()["MLFLOW_TRACKING_URI"]
    started = read_service(home, "mlflow") is None
    server = ensure_mlflow_ui(home, tracking_uri)
    # the registered models page: what a reviewer opens first
    return OpenUi("MLflow", f"{server.url}/#/models", started, lambda: stop_service(home, "mlflow"))


def _recorded_pid(state_path: Path) -> int | None:
    try:
        return int(json.loads(state_path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _labelstudio(home: Home) -> OpenUi:
    from sluice import labelstudio_server as ls

    settings = ls.LabelStudioSettings()
    before = _recorded_pid(home.labelstudio / "server.json")
    server = ls.ensure_server(settings, home)
    from sluice.cli_annotators import SIGN_IN_HINT

    return OpenUi("Label Studio", server.url, server.pid != before, server.stop, SIGN_IN_HINT)


def open_uis(home: Home, *, labelstudio: bool = True) -> UiSession:
    """Start (or reuse) the UIs side by side; a UI that cannot start is reported, not fatal.

    Label Studio's first start runs its migrations (~85 s); Prefect and MLflow take ~20-30 s.
    """
    from sluice.labelstudio_server import LabelStudioServerError

    starters: list[Callable[[Home], OpenUi]] = [_prefect, _mlflow]
    if labelstudio:
        starters.append(_labelstudio)
    uis: list[OpenUi] = []
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=len(starters)) as pool:
        futures = [(starter, pool.submit(starter, home)) for starter in starters]
        for starter, future in futures:
            try:
                uis.append(future.result())
            except (ServiceError, LabelStudioServerError, OSError) as exc:
                problems.append(f"{starter.__name__.strip('_')}: {exc}")
    return UiSession(uis, problems)


def _say(message: str) -> None:
    print(message, flush=True)  # noqa: T201 - a terminal command


def run_ui(home: Home, *, labelstudio: bool = True) -> int:
    """Open the UIs, print their URLs, wait for Ctrl-C or SIGTERM, then stop the ones started here."""
    done = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        done.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    session = UiSession([], [])
    try:
        _say("sluice: starting the UIs (Prefect ~20 s, MLflow ~30 s, Label Studio ~85 s on its first start)…")
        session = open_uis(home, labelstudio=labelstudio)
        for problem in session.problems:
            _say(f"sluice: not started: {problem}")
        if not session.uis:
            return 1
        for ui in session.uis:
            reused = "" if ui.started else " (already running)"
            _say(f"  {ui.name:<13}{ui.url}{reused}" + (f"  {ui.note}" if ui.note else ""))
        _say("sluice: Ctrl-C stops the UIs started here.")
        while not done.wait(2.0):
            pass
        return 0
    finally:
        stopped = session.stop_started()
        if stopped:
            _say(f"sluice: stopped {', '.join(stopped)}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout.flush()
