"""Secrets come from the environment or a Prefect Secret block and never reach logs, params, tags or files."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import mlflow
import pytest

from sluice.home import Home
from sluice.labelstudio_server import URL_ENV_VAR, LabelStudioSettings, RunningServer
from sluice.secrets import (
    LABEL_STUDIO_TOKEN,
    LABEL_STUDIO_TOKEN_ENV,
    SecretError,
    resolve_secret,
    store_secret,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_environment_wins_over_the_block_and_missing_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sluice-test-{uuid.uuid4().hex[:8]}"
    env = ("SLUICE_TEST_FIRST", "SLUICE_TEST_SECOND")
    for var in env:
        monkeypatch.delenv(var, raising=False)
    assert resolve_secret(name, env) is None

    store_secret(name, "from-the-block")
    assert resolve_secret(name, env) == "from-the-block"
    monkeypatch.setenv("SLUICE_TEST_SECOND", "from-the-second-variable")
    assert resolve_secret(name, env) == "from-the-second-variable"
    monkeypatch.setenv("SLUICE_TEST_FIRST", "from-the-first-variable")
    assert resolve_secret(name, env) == "from-the-first-variable"

    store_secret(name, "rotated")  # overwrite, e.g. after rotating the token
    monkeypatch.delenv("SLUICE_TEST_FIRST")
    monkeypatch.delenv("SLUICE_TEST_SECOND")
    assert resolve_secret(name, env) == "rotated"


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(SecretError, match="refusing to store an empty value"):
        store_secret("sluice-test-empty", "  ")


# --- where a secret could leak ------------------------------------------------------------------------------


def _files_containing(needle: str, roots: Iterable[Path]) -> list[str]:
    raw = needle.encode()
    hits = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                try:
                    if raw in path.read_bytes():
                        hits.append(f"file {path}")
                except OSError:
                    continue
    return hits


def _prefect_records_containing(needle: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs travel to the API in batches: send what is queued first

    async def _all(read) -> list:  # the session's server holds more records than one page
        records, offset = [], 0
        while page := await read(limit=200, offset=offset):
            records += page
            offset += len(page)
        return records

    async def _scan() -> list[str]:
        hits = []
        async with get_client() as client:
            for run in await _all(client.read_flow_runs):
                if needle in repr((run.parameters, run.tags, run.job_variables)):
                    hits.append(f"flow run {run.name}: parameters/tags")
            for task_run in await _all(client.read_task_runs):
                if needle in repr(task_run.tags) or needle in repr(task_run.task_inputs):
                    hits.append(f"task run {task_run.name}")
            for artifact in await _all(client.read_artifacts):
                if needle in repr(artifact.data) or needle in repr(artifact.description):
                    hits.append(f"artifact {artifact.key}")
            hits += [f"log: {log.message[:80]}" for log in await _all(client.read_logs) if needle in log.message]
        return hits

    return asyncio.run(_scan())


def _prefect_logs_of(flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()

    async def _read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            return [log.message for log in logs]

    return asyncio.run(_read())


def _mlflow_records_containing(needle: str, tracking_uri: str) -> list[str]:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    hits = []
    experiments = client.search_experiments()
    for run in client.search_runs([e.experiment_id for e in experiments], max_results=500):
        for kind, values in (("param", run.data.params), ("tag", run.data.tags)):
            hits += [f"mlflow run {run.info.run_id} {kind} {k}" for k, v in values.items() if needle in k + v]
    for model in client.search_registered_models():
        if needle in repr(model.tags) or needle in str(model.description):
            hits.append(f"registered model {model.name}")
        for version in client.search_model_versions(f"name='{model.name}'"):
            if needle in repr(version.tags) or needle in str(version.description):
                hits.append(f"model version {model.name}/{version.version}")
    return hits


def _leaks(needle: str, roots: list[Path], tracking_uri: str) -> list[str]:
    return (
        _files_containing(needle, roots)
        + _prefect_records_containing(needle)
        + _mlflow_records_containing(needle, tracking_uri)
    )


@pytest.fixture
def info_logs() -> Iterator[None]:
    """Run loggers at INFO (the test session ships only warnings), so every stage's log lines are scanned."""
    import prefect.main  # noqa: F401 - its import configures logging: set the level after it

    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.setLevel(logging.INFO)
    yield
    prefect_logger.setLevel(level)


@pytest.mark.slow
@pytest.mark.labelstudio
@pytest.mark.usefixtures("info_logs")
def test_the_pipeline_leaks_no_token(
    make_config: Callable[..., Path],
    home: Home,
    mlflow_store: str,
    labelstudio_server: RunningServer,
    labelstudio_settings: LabelStudioSettings,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from prefect import flow, get_run_logger
    from prefect.artifacts import create_markdown_artifact

    from flows.pipeline import pipeline

    # The admin token of the real server, handed over the way a user does: environment and Secret block.
    token = labelstudio_server.token
    password = labelstudio_settings.resolve_password(home)
    for var in LABEL_STUDIO_TOKEN_ENV:
        monkeypatch.setenv(var, token)
    monkeypatch.setenv(URL_ENV_VAR, labelstudio_server.url)
    store_secret(LABEL_STUDIO_TOKEN, token)
    assert resolve_secret(LABEL_STUDIO_TOKEN, LABEL_STUDIO_TOKEN_ENV) == token

    # Labels from annotation: the run reads the token to import, export, build the review queue.
    config = make_config(
        demo__rows=600,
        labels__source="annotation",
        labels__column="category",
        annotation__label_config=str(Path(__file__).resolve().parents[2] / "label_config" / "text_classification.xml"),
        annotation__project_identifier=f"secrets-{uuid.uuid4().hex[:8]}",
        annotation__simulate=True,
        annotation__simulator={"annotators": {"alice": 0.02, "bruno": 0.04, "chidi": 0.12}, "seed": 3},
        consensus__min_item_agreement=0.7,
        train__epochs=2,
        registry__model_name="rt-secrets-test",
    )
    result = pipeline(config_path=str(config), home=str(home.root))
    assert result["model_version"] and result["annotation"]["status"] == "ready"
    assert _prefect_logs_of(result["flow_run_id"]), "no log line of the run reached the API: none scanned"

    mlflow_root = Path(mlflow_store.removeprefix("sqlite:///")).parent
    roots = [home.root, mlflow_root, Path(config).parent]
    for secret in (token, password):
        assert _leaks(secret, roots, mlflow_store) == []
    out, err = capfd.readouterr()
    assert token not in out + err and password not in out + err

    # The scan can fail: a planted copy in each place is found.
    canary = secrets.token_hex(20)
    (home.root / "planted.txt").write_text(f"token={canary}")

    @flow(name="plant-canary")
    def _plant() -> None:
        get_run_logger().info("oops %s", canary)
        create_markdown_artifact(key="canary", markdown=canary)

    _plant()
    mlflow.MlflowClient(tracking_uri=mlflow_store).set_tag(result["run_id"], "oops", canary)
    found = " | ".join(_leaks(canary, roots, mlflow_store))
    for place in ("planted.txt", "artifact canary", "log: oops", "tag oops"):
        assert place in found, f"the scan missed the canary in {place}: {found}"
