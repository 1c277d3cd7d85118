"""Gates that cannot be bypassed: a refused champion lookup, a retried registration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest

from sluice import tracking
from sluice.home import Home

pytestmark = pytest.mark.usefixtures("prefect_server")

# Its own experiment: the run count below must not see other tests' runs in the session's MLflow store.
SMALL = {
    "demo__rows": 600,
    "train__epochs": 2,
    "train__patience": 1,
    "registry__model_name": "rt-gates",
    "registry__experiment": "rt-gates",
}
LOW_FLOORS = {"floors": {"accuracy": 0.3}}


def test_only_a_missing_alias_means_no_champion(mlflow_store: str) -> None:
    tracking.configure_tracking(mlflow_store)
    mlflow.MlflowClient(tracking_uri=mlflow_store).create_registered_model("rt-alias")
    assert tracking.version_for_alias("rt-alias", "champion") is None  # MLflow: INVALID_PARAMETER_VALUE, not found
    assert tracking.version_for_alias("rt-no-such-model", "champion") is None
    # the same error code for a request MLflow refused is an error, never "no champion"
    with pytest.raises(tracking.TrackingError, match="Invalid alias name"):
        tracking.version_for_alias("rt-alias", "bad alias!")


def test_a_refused_lookup_holds_the_version_and_a_retried_registration_leaves_one_run(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from flows.pipeline import pipeline

    # A registry that refuses the champion lookup, and drops the connection while the model uploads once:
    # neither can be produced on demand by a local store, so both are injected at MLflow's client.
    def refuse(self: Any, name: str, alias: str) -> None:
        raise MlflowException("the registry refused the request", error_code=INVALID_PARAMETER_VALUE)

    real_log_model, failures = mlflow.pyfunc.log_model, []

    def flaky_log_model(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append("once")
            raise ConnectionError("connection reset while uploading the model")
        return real_log_model(*args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", refuse)
    monkeypatch.setattr(mlflow.pyfunc, "log_model", flaky_log_model)
    tuning = {"tuning__method": "grid", "tuning__grid": {"lr": [0.01]}}
    config = make_config(**SMALL, **tuning, registry__promotion=LOW_FLOORS | {"first_run": "promote"})
    first = pipeline(config_path=str(config), home=str(home.root))
    monkeypatch.undo()

    assert failures == ["once"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("rt-gates", first["model_version"])
    runs = client.search_runs([first["experiment_id"]], run_view_type=mlflow.entities.ViewType.ALL)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == version.run_id]
    assert [r.info.run_id for r in parents] == [version.run_id] and len(trials) == 1
    assert parents[0].info.status == "FINISHED"
    # two epochs, each logged once: the resumed run logged nothing twice
    assert len(client.get_metric_history(version.run_id, "val_loss")) == 2
    assert [str(v.version) for v in client.search_model_versions("name = 'rt-gates'")] == [first["model_version"]]
    # "first_run: promote" did not promote: a refused lookup is not "no champion"
    assert first["aliases"] == ["challenger"]
    assert version.tags["sluice.gate.champion"].startswith("FAILED: the champion could not be compared")
    assert "refused the request" in version.tags["sluice.gate.champion"]
