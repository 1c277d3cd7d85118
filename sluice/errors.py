"""How a failure ends a command: its kind, its exit code, whether a retry can help, and the one message to show.

Four kinds, each with its own exit code (the README lists them):

- bad input (1): the user's files, config or settings are wrong. Deterministic: never retried.
- a gate (2): expectations, leakage or agreement stopped the run on purpose.
- a service went away (3): Label Studio, MLflow or the Prefect server stopped answering, after the I/O retries.
- a bug (4): anything else. The message says so, so that a bug is never passed off as bad input.

The traceback never reaches the terminal: it goes to the command's log file (`sluice.runlog`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

_SOURCE_DIRS = tuple(Path(__file__).resolve().parents[1] / name for name in ("sluice", "tasks", "flows"))


class Kind(StrEnum):
    """The four ways a command can fail."""

    INPUT = "bad input"
    GATE = "gate"
    SERVICE = "service"
    BUG = "bug"


EXIT_CODES = {Kind.INPUT: 1, Kind.GATE: 2, Kind.SERVICE: 3, Kind.BUG: 4}
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C

# Every error type sluice defines, and the few library ones that always mean bad input, as
# "module:Class". Looked up by name along the exception's MRO, so classifying a failure imports nothing
# (no Great Expectations or torch just to print a message); tests/code/test_errors.py checks that every
# error class in sluice/, tasks/ and flows/ is listed here.
ERROR_KINDS: dict[str, Kind] = {
    "sluice.config:ConfigError": Kind.INPUT,
    "tasks.ingest:IngestError": Kind.INPUT,
    "tasks.validate:SuiteFileError": Kind.INPUT,
    "tasks.label_config:LabelConfigError": Kind.INPUT,
    "tasks.labels:LabelError": Kind.INPUT,
    "tasks.annotations:EmptyExportError": Kind.INPUT,
    "tasks.annotations:GoldFileError": Kind.INPUT,
    "sluice.annotators:AnnotatorError": Kind.INPUT,
    "tasks.demo_data:DemoDataError": Kind.INPUT,
    "tasks.profile:ProfileError": Kind.INPUT,
    "sluice.labelstudio:LabelStudioAuthError": Kind.INPUT,
    "sluice.secrets:SecretError": Kind.INPUT,
    "sluice.deploy:DeployError": Kind.INPUT,
    "sluice.home:BackendError": Kind.INPUT,
    "tasks.db_urls:UrlError": Kind.INPUT,
    "tasks.sql_source:SqlSourceError": Kind.INPUT,
    "tasks.generation:GenerationError": Kind.INPUT,
    "tasks.audio:AudioFileError": Kind.INPUT,
    "sluice.checkpoints:CheckpointBusyError": Kind.INPUT,
    "pydantic_core._pydantic_core:ValidationError": Kind.INPUT,
    "builtins:FileNotFoundError": Kind.INPUT,
    "tasks.validate:ExpectationGateError": Kind.GATE,
    "tasks.leakage:LeakageError": Kind.GATE,
    "tasks.consensus:AgreementGateError": Kind.GATE,
    "sluice.labelstudio:LabelStudioError": Kind.SERVICE,
    "sluice.labelstudio:LabelStudioUnreachableError": Kind.SERVICE,
    "sluice.labelstudio_settings:LabelStudioServerError": Kind.SERVICE,
    "sluice.tracking:TrackingError": Kind.SERVICE,
    "sluice.tracking:TrackingUnreachableError": Kind.SERVICE,
    "sluice.services:ServiceError": Kind.SERVICE,
    "sluice.services:PortTakenError": Kind.SERVICE,
    "tasks.sql_source:SqlSourceUnreachableError": Kind.SERVICE,
    "tasks.quarantine:RowsLostError": Kind.BUG,
}

# Library errors that mean a service did not answer, or answered that it lost track of the run (a Prefect
# server restarted on a fresh database). Looked for along the whole chain: Prefect wraps its own in a
# RuntimeError ("Failed to reach API at …").
_CONNECTION_ERRORS = frozenset(
    {
        "httpx:TransportError",
        "prefect.exceptions:PrefectHTTPStatusError",
        "requests.exceptions:ConnectionError",
        "requests.exceptions:Timeout",
        "builtins:ConnectionError",
        "builtins:TimeoutError",
    }
)


def _names(exc: BaseException) -> Iterator[str]:
    for cls in type(exc).__mro__:
        yield f"{cls.__module__}:{cls.__qualname__}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_in(exc: BaseException, folders: tuple[Path, ...]) -> bool:
    """Whether the innermost frame of the traceback lies in one of `folders`."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    raised_in = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(raised_in.is_relative_to(folder) for folder in folders)


def _prefect_service_dirs() -> tuple[Path, ...]:
    # Prefect is imported whenever one of its errors exists; nothing is imported to find out.
    prefect = sys.modules.get("prefect")
    if prefect is None or not prefect.__file__:
        return ()
    root = Path(prefect.__file__).resolve().parent
    return (root / "server", root / "client")


def classify(exc: BaseException) -> Kind:
    """The kind of failure `exc` is: bad input, a gate, a service that went away, or a bug."""
    for name in _names(exc):
        if name in ERROR_KINDS:
            return ERROR_KINDS[name]
    if any(name in _CONNECTION_ERRORS for link in _chain(exc) for name in _names(link)):
        return Kind.SERVICE
    if _raised_in(exc, _prefect_service_dirs()):  # Prefect's client or server gave up (a server that never came up)
        return Kind.SERVICE
    # sluice's own checks raise a plain ValueError naming the setting and the fix; a ValueError from
    # inside pandas or pyarrow ("cannot insert item_id, already exists") is a case sluice did not handle.
    if isinstance(exc, ValueError) and _raised_in(exc, _SOURCE_DIRS):
        return Kind.INPUT
    return Kind.BUG


def is_retryable(exc: BaseException) -> bool:
    """False for failures a retry would only repeat: bad input and gates."""
    return classify(exc) not in (Kind.INPUT, Kind.GATE)


def _service_hint(exc: BaseException) -> str | None:
    names = {name for link in _chain(exc) for name in _names(link)}
    if any(
        name.startswith(("sluice.labelstudio:", "sluice.labelstudio_server:", "sluice.labelstudio_settings:"))
        for name in names
    ):
        resume = (
            "then run the same command again: it resumes where this run stopped "
            "(items already in Label Studio are not imported twice)"
        )
        if os.environ.get("SLUICE_LABEL_STUDIO_URL"):
            return f"this run uses the server at $SLUICE_LABEL_STUDIO_URL: start that one, {resume}"
        return resume
    if any(name.startswith("sluice.tracking:") for name in names):
        return None  # its message names the tracking URI and the setting already
    api = os.environ.get("PREFECT_API_URL", "")
    by_prefect = any(name.startswith("prefect.") for name in names) or _raised_in(exc, _prefect_service_dirs())
    if api and (by_prefect or any(api.rstrip("/") in str(link) for link in _chain(exc))):
        return (
            f"the Prefect server at {api.removesuffix('/api')} is not answering: `sluice stop`, then run the same "
            "command again and sluice starts a fresh one (a $PREFECT_API_URL you set yourself must point at a "
            "running server)"
        )
    if by_prefect:
        return (
            "the temporary Prefect server of `--prefect ephemeral` did not answer: run without it (sluice starts "
            "the home's own server), or give it longer with $PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
        )
    return "check that the service named above is running, then run the same command again"


@dataclass(frozen=True)
class Failure:
    """What the terminal says when a command fails: one message, what to do, where to look."""

    kind: Kind
    message: str
    hints: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]

    def render(self, *, log: str | None = None, prefect_url: str | None = None) -> str:
        lines = [f"sluice: {self.message}", *(f"  {hint}" for hint in self.hints)]
        if prefect_url:
            lines.append(f"  Prefect UI: {prefect_url} (the run's logs and its failure artifact)")
        if log:
            lines.append(f"  full log: {log}")
        return "\n".join(lines)


def describe_failure(exc: BaseException) -> Failure:
    """The kind of `exc` and the message a user can act on."""
    kind = classify(exc)
    text = str(exc).strip() or type(exc).__name__
    if kind is Kind.GATE:
        return Failure(kind, f"a gate stopped the run: {text}")
    if kind is Kind.SERVICE:
        hint = _service_hint(exc)
        return Failure(kind, text, [hint] if hint else [])
    if kind is Kind.BUG:
        return Failure(
            kind,
            f"internal error: {type(exc).__name__}: {text}",
            ["this is a bug in sluice, not a problem with your input: please report it with the log below"],
        )
    return Failure(kind, text)
