"""The annotation stage against a real Label Studio: overlap, agreement gate, consensus, review queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sluice.home import Home
from sluice.labelstudio import LabelStudioClient
from sluice.labelstudio_server import RunningServer
from tasks.consensus import AgreementGateError

pytestmark = [pytest.mark.labelstudio, pytest.mark.usefixtures("prefect_server")]

ANNOTATION = {
    "labels__source": "annotation",
    "labels__column": "category",
    "annotation__label_config": "label_config/text_classification.xml",
    "annotation__project_title": "test: fresh or rotten?",
    "annotation__overlap": 3,
    "annotation__simulate": True,
    "annotation__simulator": {"annotators": {"alice": 0.02, "bruno": 0.04, "chidi": 0.12}, "seed": 3},
    "consensus__min_item_agreement": 0.7,
    "demo__rows": 400,
    "train__epochs": 3,
    "train__patience": 2,
}


@pytest.fixture
def use_server(labelstudio_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    """Point the flows at the test server (as a user points them at a shared one)."""
    monkeypatch.setenv("SLUICE_LABEL_STUDIO_URL", labelstudio_server.url)
    monkeypatch.setenv("SLUICE_LABEL_STUDIO_TOKEN", labelstudio_server.token)
    return labelstudio_server


def _absolute_label_config(make_config: Callable[..., Path], **overrides: object) -> Path:
    repo = Path(__file__).resolve().parents[2]
    settings = dict(ANNOTATION) | overrides
    settings["annotation__label_config"] = str(repo / str(settings["annotation__label_config"]))
    return make_config(**settings)


def test_pipeline_trains_on_consensus_and_queues_disputes(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, use_server: RunningServer
) -> None:
    from flows.pipeline import pipeline

    config = _absolute_label_config(
        make_config,
        annotation__project_identifier="flow-consensus",
        annotation__overlap_min=2,  # ActiveLab asks for a third annotator where it is worth it
        registry__model_name="rt-annotated",
    )
    result = pipeline(config_path=str(config), home=str(home.root))

    annotation = result["annotation"]
    assert annotation["status"] == "ready" and annotation["coverage"] == 1.0
    assert annotation["noisiest_annotator"].startswith("chidi")
    assert annotation["review_queue"] > 0 and annotation["consensus_method"] == "crowdlab"
    figures = annotation["figures"]  # the simulator's held-back labels give the truth
    assert 2.0 < figures["annotations_per_item"] <= 2.25
    assert figures["review_share"] <= 0.06 and figures["trained_share"] >= 0.94  # budget 5 %, rounded up
    assert figures["trained_labels_right"] >= 0.97
    assert result["label_audit"]["rows"] > 0 and "test_intervals" in result
    rows = result["rows"]
    # disputed items wait for review: they are neither trained on nor lost
    assert rows["awaiting"] == annotation["review_queue"]
    assert rows["rows_in"] == rows["trainable"] + rows["awaiting"] + rows["quarantined_total"]

    version = mlflow.MlflowClient(tracking_uri=mlflow_store).get_model_version("rt-annotated", result["model_version"])
    assert float(version.tags["sluice.krippendorff_alpha"]) == pytest.approx(annotation["alpha"], abs=1e-4)
    assert version.tags["sluice.labelstudio_export_sha256"] == annotation["export_sha256"]
    run = mlflow.MlflowClient(tracking_uri=mlflow_store).get_run(version.run_id)
    assert "agreement_kappa_chidi_sluice.local" in run.data.metrics

    card = version.description
    assert "## Test-set label audit" in card and "sent to review" in card
    telemetry = pd.read_csv(home.labels / "flow-consensus" / "annotator_telemetry.csv").set_index("annotator")
    assert telemetry["crowdlab_quality"].idxmin().startswith("chidi")

    client = LabelStudioClient.connect(use_server.url, use_server.token)
    review = client.progress(annotation["review_project_id"])
    assert review.tasks == annotation["review_queue"]
    suggested = client.list_predictions(annotation["review_project_id"])
    queue = pd.read_parquet(home.labels / "flow-consensus" / "review_queue.parquet").set_index("item_id")
    assert len(suggested) == annotation["review_queue"]  # the model's suggestion, pre-selected for the reviewer
    assert suggested["label"].tolist() == queue.loc[suggested["item_id"], "suggestion"].tolist()
    # ActiveLab raised the overlap of the items it picked; the project's own setting never moved.
    overlaps = pd.Series([n for _, n in client.list_tasks(annotation["project_id"]).values()])
    assert set(overlaps) <= {2, 3, 1000} and (overlaps == 3).sum() > 0


def test_adjudication_wins_over_consensus_on_the_next_sync(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, use_server: RunningServer
) -> None:
    from flows.annotate import annotation_sync

    config = _absolute_label_config(make_config, annotation__project_identifier="flow-adjudicate", demo__rows=400)
    first = annotation_sync(config_path=str(config), home=str(home.root))
    assert first["review_queue"] > 0
    queue = pd.read_parquet(Path(first["folder"]) / "review_queue.parquet")
    disputed = str(queue["item_id"].iloc[0])

    client = LabelStudioClient.connect(use_server.url, use_server.token)
    tasks = client.export_tasks(first["review_project_id"])
    task = next(t for t in tasks if str(t["data"]["item_id"]) == disputed)
    client.submit_annotation(
        task["id"], [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["rotten"]}}]
    )

    second = annotation_sync(config_path=str(config), home=str(home.root))
    assert second["adjudicated"] == 1 and second["review_queue"] == first["review_queue"] - 1
    consensus = pd.read_parquet(Path(second["folder"]) / "consensus.parquet").set_index("item_id")
    assert consensus.loc[disputed, "label"] == "rotten" and consensus.loc[disputed, "source"] == "adjudicated"


def test_low_agreement_stops_the_flow_with_the_report(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, use_server: RunningServer
) -> None:
    from flows.pipeline import pipeline

    config = _absolute_label_config(
        make_config,
        annotation__project_identifier="flow-noisy",
        annotation__simulator={"annotators": {"ann": 0.05, "bob": 0.3, "cy": 0.45}, "seed": 5},
        demo__rows=400,
        registry__model_name="rt-noisy",
    )
    with pytest.raises(AgreementGateError, match=r"Krippendorff's alpha .* below the threshold 0.667"):
        pipeline(config_path=str(config), home=str(home.root))
    assert not mlflow.MlflowClient(tracking_uri=mlflow_store).search_model_versions("name = 'rt-noisy'")


def test_sync_waits_cleanly_until_annotators_are_done(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, use_server: RunningServer
) -> None:
    from flows.annotate import annotation_sync

    config = _absolute_label_config(
        make_config, annotation__project_identifier="flow-waiting", annotation__simulate=False, demo__rows=300
    )
    result = annotation_sync(config_path=str(config), home=str(home.root))
    assert result["status"] == "waiting" and result["coverage"] == 0.0
    assert result["alpha"] is None and result["consensus_labels"] is None
    # the rows the clean suite removed (plot summaries) are in the snapshot's quarantine, as a pipeline run leaves them
    quarantine = pd.read_parquet(result["quarantine_path"])
    assert (quarantine["step"] == "expectations:rotten_tomatoes_clean").sum() >= 1
    # a rerun imports nothing new
    again = annotation_sync(config_path=str(config), home=str(home.root))
    assert again["project_id"] == result["project_id"]
    client = LabelStudioClient.connect(use_server.url, use_server.token)
    assert client.progress(result["project_id"]).tasks == len(client.list_item_ids(result["project_id"]))


def test_gate_pass_starts_the_training_deployment_once(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, use_server: RunningServer
) -> None:
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.annotate import annotation_sync
    from flows.pipeline import pipeline

    async def _deploy() -> str:
        async with get_client() as client:
            flow_id = await client.create_flow(pipeline)
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name="test-training", entrypoint="flows/pipeline.py:pipeline"
            )
        return str(deployment_id)

    deployment_id = asyncio.run(_deploy())
    config = _absolute_label_config(make_config, annotation__project_identifier="flow-retrain")
    first = annotation_sync(
        config_path=str(config), home=str(home.root), retrain_deployment="sluice-pipeline/test-training"
    )
    assert first["status"] == "ready" and first["training_flow_run"]

    async def _read(flow_run_id: str) -> tuple[str, dict[str, object]]:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
        return str(run.deployment_id), dict(run.parameters)

    run_deployment_id, parameters = asyncio.run(_read(first["training_flow_run"]))
    assert run_deployment_id == deployment_id and parameters["config_path"] == str(config)
    # the same consensus labels do not start training twice
    again = annotation_sync(
        config_path=str(config), home=str(home.root), retrain_deployment="sluice-pipeline/test-training"
    )
    assert again["training_flow_run"] is None


def test_champion_predictions_go_out_as_suggestions(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, use_server: RunningServer
) -> None:
    from flows.annotate import annotation_sync
    from flows.pipeline import pipeline

    # a champion trained on the source's own labels
    labelled = make_config(
        demo__rows=500, train__epochs=2, registry__model_name="rt-suggest", registry__promotion={"floors": {}}
    )
    trained = pipeline(config_path=str(labelled), home=str(home.root))
    assert "champion" in trained["aliases"]

    config = _absolute_label_config(
        make_config,
        annotation__project_identifier="flow-suggest",
        annotation__simulate=False,
        demo__rows=300,
        registry__model_name="rt-suggest",
    )
    result = annotation_sync(config_path=str(config), home=str(home.root))
    assert result["status"] == "waiting"
    client = LabelStudioClient.connect(use_server.url, use_server.token)
    predictions = client.list_predictions(result["project_id"])
    assert len(predictions) == client.progress(result["project_id"]).tasks > 0
    assert set(predictions["model_version"]) == {f"rt-suggest-v{trained['model_version']}"}
    assert set(predictions["label"]) <= {"fresh", "rotten"} and predictions["score"].between(0.5, 1.0).all()
