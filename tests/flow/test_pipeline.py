"""The whole pipeline on a slice of the real data, under a real Prefect server and MLflow store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from sluice.home import Home
from tasks.validate import ExpectationGateError
from tests.flow.helpers import serve_in_fresh_process

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL = {"demo__rows": 1500, "train__epochs": 4, "train__patience": 2}


def test_pipeline_registers_a_version_with_lineage(
    make_config: Callable[..., Path], home: Home, mlflow_store: str
) -> None:
    from flows.pipeline import pipeline

    config = make_config(registry__model_name="rt-flow-test", **SMALL)
    result = pipeline(config_path=str(config), home=str(home.root))

    rows = result["rows"]
    assert rows["rows_in"] == 1500
    assert rows["rows_in"] == rows["trainable"] + rows["awaiting"] + rows["quarantined_total"]
    quarantine = pd.read_parquet(result["quarantine_path"])
    assert len(quarantine) == rows["quarantined_total"] > 0
    assert quarantine["reason"].str.len().gt(0).all()
    # plot summaries carry no sentiment: the clean suite's row-level expectation quarantines them
    assert rows["quarantined"]["expectations:rotten_tomatoes_clean"] >= 1

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("rt-flow-test", result["model_version"])
    assert version.tags["sluice.snapshot_id"] == result["snapshot_id"]
    assert version.tags["sluice.split_manifest_hash"] == result["split_manifest_hash"]
    run = client.get_run(version.run_id)
    assert run.data.params["train.epochs"] == "4"
    assert run.data.params["split.strategy"] == "stratified"
    assert run.data.tags["sluice.snapshot_id"] == result["snapshot_id"]
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert len(client.get_metric_history(version.run_id, "val_loss")) >= 1
    assert sum(result["split_sizes"].values()) == rows["trainable"]
    # the ONNX export sits beside the pyfunc model and matches PyTorch
    assert run.data.metrics["onnx_max_abs_logit_diff"] < 1e-3
    assert [a.path for a in client.list_artifacts(version.run_id, "onnx")] == ["onnx/model.onnx"]
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "reports")}
    assert {"reports/model_card.md", "reports/leakage_report.json", "reports/expectations.json"} <= artifacts
    # the Datalab data-quality report of the labelled rows travels with the run
    assert {"reports/data_quality.md", "reports/data_quality_issues.csv"} <= artifacts
    report = Path(mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="reports/data_quality.md"))
    assert "| near_duplicate |" in report.read_text() and "| label |" in report.read_text()

    # a plain MLflow client in a fresh process serves the model from raw text
    predictions = serve_in_fresh_process(
        f"models:/rt-flow-test/{result['model_version']}",
        mlflow_store,
        ["a gorgeous, moving film", "dull and lifeless"],
    )
    assert [p["label"] in ("fresh", "rotten") for p in predictions] == [True, True]


def test_gate_stops_a_corrupted_input_naming_the_expectation(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, tmp_path: Path
) -> None:
    from flows.pipeline import pipeline
    from tasks.demo_data import rotten_tomatoes_frame

    corrupted = rotten_tomatoes_frame(400)
    corrupted.loc[corrupted.index[::7], "movie_name"] = None
    path = tmp_path / "corrupted.csv"
    corrupted.to_csv(path, index=False)
    config = make_config(source__path=str(path), demo=None, registry__model_name="rt-gate-test")

    with pytest.raises(
        ExpectationGateError, match=r'expect_column_values_to_not_be_null\("movie_name"\): \d+ bad rows'
    ):
        pipeline(config_path=str(config), home=str(home.root))
    # nothing was registered for the stopped run
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    assert not client.search_model_versions("name = 'rt-gate-test'")
    # the failed run is named after its data and leaves a failure artifact that says why
    run, artifact = asyncio.run(_latest_run_and_failure_artifact())
    assert run.name.startswith("rotten_tomatoes_labelled-") and run.state_name == "Failed"
    assert artifact is not None and "ExpectationGateError" in str(artifact.data)
    assert 'expect_column_values_to_not_be_null("movie_name")' in str(artifact.data)


async def _latest_run_and_failure_artifact() -> tuple[Any, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        (run,) = await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sluice-pipeline-failure"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
        )
    return run, artifacts[0] if artifacts else None
