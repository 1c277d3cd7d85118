"""Human approval: the flow run pauses after registration and a reviewer resumes it through the Prefect API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pytest

from sluice.home import Home

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL = {"demo__rows": 600, "train__epochs": 2, "train__patience": 1, "registry__model_name": "rt-approval"}
MANUAL = {"floors": {"accuracy": 0.3}, "approval": "manual", "margin": -1.0, "min_compared_items": 10}


async def _paused_run() -> tuple[Any, str]:
    """The paused flow run and the description its reviewer reads, once the pipeline has paused."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.input.actions import read_flow_run_input

    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    async with get_client() as client:
        for _ in range(900):  # a shrunken run trains within minutes, even on a busy machine
            runs = await client.read_flow_runs(flow_run_filter=paused)
            if runs:
                keyset = runs[0].state.state_details.run_input_keyset
                description = await read_flow_run_input(keyset["description"], flow_run_id=runs[0].id)
                return runs[0], str(description)
            await asyncio.sleep(1)
    raise AssertionError("the pipeline never paused for review")


@contextmanager
def _reviewer(answer: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Another thread that waits for the pause and resumes the run with `answer`, as the UI's form does."""
    from prefect.flow_runs import resume_flow_run

    seen: dict[str, Any] = {}

    def review() -> None:
        run, seen["description"] = asyncio.run(_paused_run())
        resume_flow_run(run.id, run_input=answer)

    thread = threading.Thread(target=review, daemon=True)
    thread.start()
    yield seen
    thread.join(timeout=60)


def test_a_reviewer_approves_then_rejects_through_the_prefect_api(
    make_config: Callable[..., Path], home: Home, mlflow_store: str
) -> None:
    from flows.pipeline import pipeline

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    approve = {"decision": "approve", "reason": "beats the baseline", "reviewer": "rita"}
    with _reviewer(approve) as seen:
        first = pipeline(config_path=str(make_config(**SMALL, registry__promotion=MANUAL)), home=str(home.root))
    assert "## Review rt-approval version" in seen["description"] and "| floor.accuracy | pass |" in seen["description"]
    assert first["review"] == "approved" and first["aliases"] == ["challenger", "champion"]
    version = client.get_model_version("rt-approval", first["model_version"])
    assert version.tags["sluice.review.by"] == "rita" and version.tags["sluice.review.reason"] == "beats the baseline"
    assert version.tags["sluice.review.at"] and version.tags["sluice.promotion"] == "champion"
    assert str(client.get_model_version_by_alias("rt-approval", "champion").version) == first["model_version"]

    reject = {"decision": "reject", "reason": "fails on short reviews", "reviewer": "sam"}
    with _reviewer(reject):
        second = pipeline(
            config_path=str(make_config(**(SMALL | {"train__epochs": 3}), registry__promotion=MANUAL)),
            home=str(home.root),
        )
    assert second["review"] == "rejected" and second["aliases"] == []
    rejected = client.get_model_version("rt-approval", second["model_version"])
    assert rejected.tags["sluice.review.action"] == "reject" and rejected.tags["sluice.review.by"] == "sam"
    assert not rejected.aliases
    assert str(client.get_model_version_by_alias("rt-approval", "champion").version) == first["model_version"]


def test_a_review_nobody_answers_leaves_the_version_challenger(home: Home, mlflow_store: str) -> None:
    from prefect import flow

    from flows.review import request_review
    from sluice import tracking
    from sluice.config import parse_config

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    client.create_registered_model("rt-unreviewed")
    registered = client.create_model_version("rt-unreviewed", source=str(home.root / "model"))
    client.set_registered_model_alias("rt-unreviewed", "challenger", registered.version)
    version = tracking.RegisteredVersion(
        model_name="rt-unreviewed",
        version=str(registered.version),
        run_id="",
        experiment_id="0",
        model_uri=f"models:/rt-unreviewed/{registered.version}",
        tracking_uri=mlflow_store,
    )
    config = parse_config(
        {
            "name": "unreviewed",
            "source": {"path": "unused.csv"},
            "labels": {"source": "column", "column": "y", "classes": ["a", "b"]},
            "registry": {"model_name": "rt-unreviewed", "promotion": {"approval": "manual", "approval_timeout": 2}},
        },
        base_dir=home.root,
    )

    @flow(name="review-timeout")
    def waits() -> str:
        return request_review(config, mlflow_store, version, "## Review rt-unreviewed").status

    state = waits(return_state=True)
    assert state.is_completed() and state.result() == "timed out"  # the run finishes; nobody failed it
    tags = client.get_model_version("rt-unreviewed", registered.version).tags
    assert tags["sluice.review.action"] == "timed out" and "stays challenger" in tags["sluice.review.reason"]
    assert [a for a in client.get_registered_model("rt-unreviewed").aliases] == ["challenger"]
