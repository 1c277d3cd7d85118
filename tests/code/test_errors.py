"""Failure kinds, exit codes, retries and the terminal filter: bad input is never a bug, nor a bug bad input."""

from __future__ import annotations

import ast
import io
import logging
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from sluice.errors import ERROR_KINDS, Kind, classify, describe_failure, is_retryable
from sluice.home import Home
from sluice.runlog import ProgressOnly, open_command_log

REPO = Path(__file__).resolve().parents[2]


def _raised(error: BaseException) -> BaseException:
    """The error with a traceback, as the CLI sees it."""
    try:
        raise error
    except BaseException as caught:
        return caught


def _project_error_classes() -> set[str]:
    """Every top-level `class …Error` in sluice/, tasks/ and flows/, as module:Class (read, not imported)."""
    found = set()
    for package in ("sluice", "tasks", "flows"):
        for path in (REPO / package).glob("*.py"):
            module = f"{package}.{path.stem}"
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                    found.add(f"{module}:{node.name}")
    return found


def test_every_error_type_sluice_defines_has_a_kind() -> None:
    defined = _project_error_classes()
    assert defined, "no error classes found: the scan is broken"
    assert sorted(defined - set(ERROR_KINDS)) == []
    listed = {name for name in ERROR_KINDS if name.startswith(("sluice.", "tasks.", "flows."))}
    assert sorted(listed - defined) == []  # no stale names after a rename


def _instance(qualified: str) -> BaseException:
    module, name = qualified.split(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    error: BaseException = cls.__new__(cls)  # gate errors need reports to build; the kind is the type's
    return error


@pytest.mark.parametrize(
    ("qualified", "kind", "exit_code", "retryable"),
    [
        ("sluice.config:ConfigError", Kind.INPUT, 1, False),
        ("tasks.ingest:IngestError", Kind.INPUT, 1, False),
        ("tasks.validate:SuiteFileError", Kind.INPUT, 1, False),
        ("tasks.label_config:LabelConfigError", Kind.INPUT, 1, False),
        ("tasks.sql_source:SqlSourceError", Kind.INPUT, 1, False),
        ("sluice.home:BackendError", Kind.INPUT, 1, False),
        # a subclass of a service error, yet bad input: the most specific class decides
        ("sluice.labelstudio:LabelStudioAuthError", Kind.INPUT, 1, False),
        ("tasks.validate:ExpectationGateError", Kind.GATE, 2, False),
        ("tasks.leakage:LeakageError", Kind.GATE, 2, False),
        ("tasks.consensus:AgreementGateError", Kind.GATE, 2, False),
        ("sluice.labelstudio:LabelStudioUnreachableError", Kind.SERVICE, 3, True),
        ("sluice.tracking:TrackingUnreachableError", Kind.SERVICE, 3, True),
        ("sluice.services:ServiceError", Kind.SERVICE, 3, True),
        ("tasks.sql_source:SqlSourceUnreachableError", Kind.SERVICE, 3, True),
        ("tasks.quarantine:RowsLostError", Kind.BUG, 4, True),
    ],
)
def test_project_errors_map_to_kinds_and_exit_codes(
    qualified: str, kind: Kind, exit_code: int, retryable: bool
) -> None:
    error = _instance(qualified)
    assert classify(error) is kind
    assert describe_failure(error).exit_code == exit_code
    assert is_retryable(error) is retryable


def test_a_check_in_sluice_is_bad_input_but_a_library_valueerror_is_a_bug() -> None:
    from tasks.neardup import score_near_duplicates

    with pytest.raises(ValueError) as own:
        score_near_duplicates(["a text"], threshold=2.0)
    assert classify(own.value) is Kind.INPUT

    with pytest.raises(ValueError, match="already exists") as pandas_error:
        pd.DataFrame({"item_id": [1]}).insert(0, "item_id", [2])
    failure = describe_failure(pandas_error.value)
    assert failure.kind is Kind.BUG and failure.exit_code == 4
    assert failure.message.startswith("internal error: ValueError: cannot insert item_id, already exists")
    assert "bug in sluice" in failure.hints[0]

    with pytest.raises(pa.ArrowException) as arrow_error:
        pa.array([1, "two"])
    assert classify(arrow_error.value) is Kind.BUG


def test_an_unreachable_prefect_server_is_a_service_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4321/api")
    try:
        try:
            raise httpx.ConnectError("All connection attempts failed")
        except httpx.ConnectError as cause:
            raise RuntimeError("Failed to reach API at http://127.0.0.1:4321/api/") from cause
    except RuntimeError as wrapped:
        failure = describe_failure(wrapped)
    assert failure.kind is Kind.SERVICE and failure.exit_code == 3
    assert "the Prefect server at http://127.0.0.1:4321 is not answering: `sluice stop`" in failure.hints[0]


def test_a_prefect_server_that_never_came_up_is_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # Raised where Prefect raises it: its ephemeral server's start-up in prefect/server/.
    where = str(Path(prefect.__file__).parent / "server" / "api" / "server.py")
    code = compile(
        "raise RuntimeError('Timed out while attempting to connect to ephemeral Prefect API server.')", where, "exec"
    )
    with pytest.raises(RuntimeError) as timed_out:
        exec(code)  # noqa: S102 (a fixed string)
    failure = describe_failure(timed_out.value)
    assert failure.kind is Kind.SERVICE and "--prefect ephemeral" in failure.hints[0]
    assert classify(_raised(RuntimeError("a RuntimeError of anyone else's"))) is Kind.BUG


def test_label_studio_hint_says_the_rerun_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluice.labelstudio import LabelStudioUnreachableError

    monkeypatch.delenv("SLUICE_LABEL_STUDIO_URL", raising=False)
    unreachable = (
        "Label Studio at http://127.0.0.1:1 is unreachable after 5 tries; start it with `sluice labelstudio start`"
    )
    error = _raised(LabelStudioUnreachableError(unreachable))
    text = describe_failure(error).render(log=".sluice/logs/run-x.log", prefect_url="http://ui/runs/flow-run/1")
    assert text.splitlines() == [
        f"sluice: {unreachable}",
        "  then run the same command again: it resumes where this run stopped "
        "(items already in Label Studio are not imported twice)",
        "  Prefect UI: http://ui/runs/flow-run/1 (the run's logs and its failure artifact)",
        "  full log: .sluice/logs/run-x.log",
    ]


def _record(message: str, level: int = logging.INFO, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError as error:
            exc_info = (type(error), error, error.__traceback__)
    return logging.LogRecord("prefect.task_runs", level, __file__, 1, message, None, exc_info)


@pytest.mark.parametrize(
    ("record", "on_terminal"),
    [
        (_record("Finished in state Completed()"), True),
        (_record("Beginning flow run 'x' for flow 'sluice-pipeline'"), True),
        # I/O retries stay visible as progress, one line each
        (_record("Task run failed with exception: ConnectError() - Retry 1/2 will start 5 second(s) from now"), True),
        (_record("Finished in state Failed('Task run encountered an exception IngestError: …')", logging.ERROR), False),
        (_record("Finished in state Failed('Flow run encountered an exception: IngestError: …')"), False),
        (_record("Running hook 'report_failure' in response to entering state 'Failed'"), False),
        (_record("Encountered exception during execution", logging.ERROR, exc=True), False),
        (_record("Still processing items: 4 items remaining...", logging.WARNING), False),
        (_record("some progress, with a traceback", exc=True), False),
    ],
)
def test_the_terminal_keeps_progress_and_drops_failure_noise(record: logging.LogRecord, on_terminal: bool) -> None:
    assert ProgressOnly().filter(record) is on_terminal


def test_prefect_logs_go_to_the_command_log_and_the_terminal_gets_progress_only(tmp_path: Path) -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    # Under pytest Prefect leaves the root logger alone, so its console handler is put where a user has it.
    terminal = io.StringIO()
    console = PrefectConsoleHandler(stream=terminal)
    task_runs = logging.getLogger("prefect.task_runs")
    task_runs.addHandler(console)
    task_runs.setLevel(logging.INFO)  # the tests run Prefect at WARNING; a user's runs log INFO
    home = Home(tmp_path / "home")
    try:
        with open_command_log(home, "run", label="reviews", always=True) as log:
            log.route_prefect()
            run = {"task_run_name": "ingest-1"}  # what Prefect's run logger adds to each record
            task_runs.info("Finished in state Completed()", extra=run)
            task_runs.error("ingest failed", exc_info=_record("x", exc=True).exc_info, extra=run)
            path = log.path
        task_runs.error("after the command", extra=run)
    finally:
        task_runs.removeHandler(console)
        task_runs.setLevel(logging.NOTSET)
    assert "Finished in state Completed()" in terminal.getvalue()
    assert "ingest failed" not in terminal.getvalue() and "Traceback" not in terminal.getvalue()
    assert "after the command" in terminal.getvalue()  # the terminal handler is given back as it was
    text = path.read_text()
    assert path.parent == home.logs and path.name.startswith("run-reviews-")
    assert "Task run 'ingest-1' - ingest failed" in text and "Traceback" in text and "ValueError: boom" in text
    assert "after the command" not in text


def test_a_quick_command_that_succeeds_leaves_no_log_file(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    with open_command_log(home, "promote") as log:
        logging.getLogger("sluice.cli").info("nothing went wrong")
    assert not log.path.exists() and not home.logs.exists()
