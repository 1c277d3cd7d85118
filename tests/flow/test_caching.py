"""Caching keyed on content: unchanged data skips the work, changed data recomputes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from sluice.home import Home

pytestmark = pytest.mark.usefixtures("prefect_server")

CACHED_STAGES = ("validate-raw", "clean", "validate-clean", "split")


def _states(flow_run_id: str) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def _read() -> dict[str, str]:
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs if run.state}

    return asyncio.run(_read())


def test_unchanged_data_skips_changed_data_recomputes(
    make_config: Callable[..., Path], home: Home, mlflow_store: str
) -> None:
    from flows.pipeline import pipeline

    small = {
        "demo__rows": 537,  # a slice no other test uses: the first run must compute
        "train__epochs": 2,
        "registry__model_name": "rt-cache",
        "registry__promotion": {"floors": {"accuracy": 0.0}},
    }
    config = make_config(**small)
    first = pipeline(config_path=str(config), home=str(home.root))
    assert {_states(first["flow_run_id"])[s] for s in CACHED_STAGES} == {"Completed"}

    again = pipeline(config_path=str(config), home=str(home.root))
    states = _states(again["flow_run_id"])
    assert {states[s] for s in CACHED_STAGES} == {"Cached"}, states
    assert again["split_manifest_hash"] == first["split_manifest_hash"]
    assert again["existing"] and "train" not in states  # identical inputs: nothing retrained

    changed = make_config(**(small | {"demo__rows": 561}))
    third = pipeline(config_path=str(changed), home=str(home.root))
    states = _states(third["flow_run_id"])
    assert third["snapshot_id"] != first["snapshot_id"]
    assert {states[s] for s in CACHED_STAGES} == {"Completed"}, states
    assert states["train"] == "Completed"
