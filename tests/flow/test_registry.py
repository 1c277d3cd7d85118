"""The registry review loop: idempotent versions, the promotion gate, human review, MLflow down, server mode."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest

from sluice.cli import main
from sluice.home import Home
from sluice.services import ensure_mlflow_ui, free_port, stop_service
from sluice.tracking import TrackingError
from tests.flow.helpers import serve_in_fresh_process

pytestmark = pytest.mark.usefixtures("prefect_server")

SMALL = {"demo__rows": 700, "train__epochs": 3, "train__patience": 2}
LOW_FLOORS = {"floors": {"accuracy": 0.3}}  # a 3-epoch model on 700 rows: the floors are not under test here


def _versions(uri: str, name: str) -> list[str]:
    return sorted(
        str(v.version) for v in mlflow.MlflowClient(tracking_uri=uri).search_model_versions(f"name = '{name}'")
    )


def test_gate_idempotency_and_human_review(make_config: Callable[..., Path], home: Home, mlflow_store: str) -> None:
    from flows.pipeline import pipeline

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    first_config = make_config(registry__model_name="rt-review", registry__promotion=LOW_FLOORS, **SMALL)
    first = pipeline(config_path=str(first_config), home=str(home.root))
    assert first["aliases"] == ["challenger", "champion"]  # first-run policy: promote
    assert str(client.get_model_version_by_alias("rt-review", "champion").version) == first["model_version"]

    # identical inputs: the existing version is reported, nothing is trained or registered
    again = pipeline(config_path=str(first_config), home=str(home.root))
    assert again["existing"] and again["model_version"] == first["model_version"]
    assert _versions(mlflow_store, "rt-review") == [first["model_version"]]

    # a new tuning grid (one trial at the default lr) is a new input: a new version, not the old one again;
    # it must beat the champion by a margin it cannot reach, so it stays challenger
    worse_config = make_config(
        registry__model_name="rt-review",
        registry__promotion=LOW_FLOORS | {"margin": 1.0},
        tuning__method="grid",
        tuning__grid={"lr": [0.001]},
        **SMALL,
    )
    second = pipeline(config_path=str(worse_config), home=str(home.root))
    assert not second["existing"] and second["model_version"] != first["model_version"]
    assert second["aliases"] == ["challenger"] and second["tuning"]["trials"] == 1
    version = client.get_model_version("rt-review", second["model_version"])
    assert version.tags["sluice.gate.champion"].startswith("FAILED: f1_macro")
    assert f"vs champion v{first['model_version']}" in version.tags["sluice.gate.champion"]
    assert "model card" in version.description and "## Promotion gate" in version.description
    assert str(client.get_model_version_by_alias("rt-review", "champion").version) == first["model_version"]

    # a reviewer promotes it by hand, then rejects it; both are recorded
    env = os.environ.get("MLFLOW_TRACKING_URI")
    assert env == mlflow_store
    assert (
        main(
            [
                "--home",
                str(home.root),
                "promote",
                "rt-review",
                second["model_version"],
                "--reason",
                "better on the new data",
                "--reviewer",
                "rita",
            ]
        )
        == 0
    )
    promoted = client.get_model_version("rt-review", second["model_version"])
    assert promoted.tags["sluice.review.by"] == "rita"
    assert promoted.tags["sluice.review.reason"] == "better on the new data"
    assert str(client.get_model_version_by_alias("rt-review", "champion").version) == second["model_version"]
    assert main(["--home", str(home.root), "reject", "rt-review", second["model_version"], "--reason", "bias"]) == 0
    rejected = client.get_model_version("rt-review", second["model_version"])
    assert rejected.tags["sluice.review.action"] == "reject" and not rejected.aliases


def test_mlflow_down_keeps_the_model_and_registers_later(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pipeline import pipeline

    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    config = make_config(registry__model_name="rt-offline", registry__tracking_uri=closed, **SMALL)
    with pytest.raises(TrackingError, match=r"could not be reached.*sluice register"):
        pipeline(config_path=str(config), home=str(home.root))

    (run_dir,) = (home.runs / "rotten_tomatoes_labelled").iterdir()
    assert (run_dir / "pending" / "pending_registration.json").is_file()
    assert (run_dir / "predictor").is_dir() and (run_dir / "reports" / "model_card.md").is_file()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    assert main(["--home", str(home.root), "register", str(run_dir)]) == 0
    assert _versions(mlflow_store, "rt-offline") == ["1"]
    version = mlflow.MlflowClient(tracking_uri=mlflow_store).get_model_version("rt-offline", "1")
    # the champion could not be scored while MLflow was down: the version waits for review
    assert version.tags["sluice.promotion"] == "challenger"
    assert not (run_dir / "pending" / "pending_registration.json").exists()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    home = Home.resolve(tmp_path / "server-home")
    service = ensure_mlflow_ui(home, f"sqlite:///{tmp_path / 'server.db'}", port=free_port())
    yield service.url
    stop_service(home, "mlflow")


@pytest.mark.slow
def test_server_mode_registers_and_serves_the_champion(
    make_config: Callable[..., Path], home: Home, mlflow_server: str
) -> None:
    from flows.pipeline import pipeline

    config = make_config(
        registry__model_name="rt-server", registry__tracking_uri=mlflow_server, registry__promotion=LOW_FLOORS, **SMALL
    )
    result = pipeline(config_path=str(config), home=str(home.root))
    assert result["tracking_uri"] == mlflow_server and "champion" in result["aliases"]
    rows = serve_in_fresh_process("models:/rt-server@champion", mlflow_server, ["a triumph", "a mess"])
    assert {"label", "proba_fresh", "proba_rotten"} <= set(rows[0])
