"""The classic MLP baseline through the whole pipeline: grid search as nested runs, cross-validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest

from sluice.home import Home

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_make_classification_grid_and_cross_validation(
    make_config: Callable[..., Path], home: Home, mlflow_store: str
) -> None:
    from flows.pipeline import pipeline

    config = make_config(
        "make_classification",
        demo__rows=400,
        train__epochs=8,
        split__folds=3,
        tuning__grid={"lr": [0.001, 0.01, 0.1]},
        registry__model_name="mc-test",
        registry__promotion={"floors": {"accuracy": 0.6}},
    )
    result = pipeline(config_path=str(config), home=str(home.root))

    assert result["tuning"]["trials"] == 3 and result["tuning"]["chosen"]["lr"] in (0.001, 0.01, 0.1)
    mean, std = result["cross_validation"]["accuracy"]
    assert 0.5 < mean <= 1.0 and std >= 0.0
    assert result["test_metrics"]["accuracy"] > 0.7

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(result["run_id"])
    assert run.data.params["train.lr"] == str(result["tuning"]["chosen"]["lr"])
    assert "cv_accuracy_mean" in run.data.metrics and "cv_accuracy_std" in run.data.metrics
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(c.data.params["lr"] for c in children) == ["0.001", "0.01", "0.1"]
