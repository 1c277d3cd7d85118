"""Where a command's log goes: all of it into a file under the home, only progress to the terminal.

Prefect's console handler prints every warning, error and engine traceback of a failed task or flow.
During a command those go to `<home>/logs/<command>-<config>-<time>.log` only; the terminal keeps
Prefect's progress lines (as on a successful run) and, at the end, the one message the CLI prints.
The Prefect UI keeps its own copy of the run's logs (Prefect's API handler is left alone).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import TextIOWrapper
from pathlib import Path

from sluice.home import Home

KEEP_LOGS = 50
"""Command logs kept under `<home>/logs/`; older ones are deleted when a new one is opened."""
_FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"
_FORMAT_FLOW_RUN = "%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s"
_FORMAT_TASK_RUN = "%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s"
# Prefect narrates a failure at INFO level as well (the final state, the failure hook): the message the CLI
# prints says it once.
_FAILURE_NARRATION = (
    "Finished in state Failed",
    "Finished in state Crashed",
    "Running hook 'report_failure'",
    "Hook 'report_failure'",
)
_STAMPED = re.compile(r"-\d{8}-\d{6}\.log$")
logger = logging.getLogger("sluice.cli")


class _LazyFileHandler(logging.FileHandler):
    """A file handler that makes its folder with the file, on the first record (quick commands make neither)."""

    def _open(self) -> TextIOWrapper:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class ProgressOnly(logging.Filter):
    """A terminal filter: progress passes; warnings, errors, tracebacks and failure narration do not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.exc_info:
            return False
        return not str(record.msg).startswith(_FAILURE_NARRATION)


@dataclass
class CommandLog:
    """The log file of one command, and the terminal handlers it quietened (put back by `close`)."""

    path: Path
    handler: logging.FileHandler
    _filter: ProgressOnly = field(default_factory=ProgressOnly)
    _quietened: list[logging.Handler] = field(default_factory=list)
    _attached: list[logging.Logger] = field(default_factory=list)
    _raise_exceptions: bool = field(default_factory=lambda: logging.raiseExceptions)

    def display_path(self) -> str:
        """The path as a user types it: relative to the current directory when it lies below it."""
        try:
            return str(self.path.relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    def route_prefect(self) -> None:
        """Prefect's terminal output to the file; call after `import prefect` (it configures logging then)."""
        from prefect.logging.formatters import PrefectFormatter

        # Prefect's API log handler writes its own failures ("--- Error logging to API ---") straight to
        # stderr unless this stdlib switch is off, as the logging docs advise for production use.
        self._raise_exceptions = logging.raiseExceptions
        logging.raiseExceptions = False

        # Prefect's dictConfig at import replaced the root logger's handlers, the file's among them.
        self._attach(logging.getLogger())
        self.handler.setFormatter(
            PrefectFormatter(_FORMAT, flow_run_fmt=_FORMAT_FLOW_RUN, task_run_fmt=_FORMAT_TASK_RUN)
        )
        for name, candidate in list(logging.Logger.manager.loggerDict.items()):
            # Loggers that do not propagate to the root (prefect.extra, prefect._internal) get the file too.
            if isinstance(candidate, logging.Logger) and not candidate.propagate and candidate.handlers:
                self._attach(candidate)
            if isinstance(candidate, logging.Logger) and name.split(".")[0] in ("prefect", "uvicorn", "fastapi"):
                self._quieten(candidate.handlers)
        self._quieten(logging.getLogger().handlers)

    def record_failure(self, exc: BaseException, message: str) -> None:
        """The message the terminal showed, and the whole traceback, into the log file."""
        logger.error("%s", message, exc_info=exc)

    def close(self) -> None:
        logging.raiseExceptions = self._raise_exceptions
        for handler in self._quietened:
            handler.removeFilter(self._filter)
        for attached in self._attached:
            attached.removeHandler(self.handler)
        self.handler.close()

    def _attach(self, target: logging.Logger) -> None:
        if self.handler not in target.handlers:
            target.addHandler(self.handler)
        if target not in self._attached:
            self._attached.append(target)

    def _quieten(self, handlers: list[logging.Handler]) -> None:
        for handler in handlers:
            # Prefect's own console handlers only: pytest's capture handler and the API handler are left alone.
            is_console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            if is_console and type(handler).__module__.startswith("prefect.") and handler not in self._quietened:
                handler.addFilter(self._filter)
                self._quietened.append(handler)


def _prune(folder: Path, keep: int) -> None:
    # Only command logs (named with a time stamp); the services' own logs live beside them.
    logs = sorted(
        (p for p in folder.glob("*.log") if _STAMPED.search(p.name)), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for old in logs[keep:]:
        old.unlink(missing_ok=True)


@contextmanager
def open_command_log(home: Home, command: str, *, label: str = "", always: bool = False) -> Iterator[CommandLog]:
    """A log file for one command under `<home>/logs/`.

    Args:
        label: added to the file name (the config's name for `sluice run`).
        always: write every record (a run's full log); otherwise the file appears only when
            something goes wrong (warnings and errors), so quick commands leave no files behind.
    """
    if always and home.logs.is_dir():
        _prune(home.logs, KEEP_LOGS)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = home.logs / ("-".join(part for part in (command, label, stamp) if part) + ".log")
    handler = _LazyFileHandler(path, encoding="utf-8", delay=True)
    handler.setLevel(logging.NOTSET if always else logging.WARNING)
    handler.setFormatter(logging.Formatter(_FORMAT))
    log = CommandLog(path=path, handler=handler)
    log._attach(logging.getLogger())
    # The CLI's own records go to the file only: the terminal gets the CLI's printed message instead.
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log._attach(logger)
    if always:
        logger.info("sluice %s %s: home %s", command, label, home.root)
    try:
        yield log
    finally:
        log.close()
