"""train.task generation through the whole pipeline: a tiny GPT-2 on the Rotten Tomatoes snippets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sluice.home import Home

pytestmark = pytest.mark.usefixtures("prefect_server")


def _generate_in_fresh_process(model_uri: str, tracking_uri: str, prompts: list[str]) -> list[dict[str, str]]:
    """Load the registered generator with a plain MLflow client in a new process (outside the repository)."""
    script = (
        "import mlflow, pandas as pd; "
        f"m = mlflow.pyfunc.load_model({model_uri!r}); "
        f"print(m.predict(pd.DataFrame({{'prompt': {prompts!r}}})).to_json(orient='records'))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows: list[dict[str, str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def test_generation_config_fine_tunes_tests_perplexity_and_registers_a_servable_generator(
    make_config: Callable[..., Path], home: Home, mlflow_store: str
) -> None:
    from flows.pipeline import pipeline

    config = make_config(
        "rotten_tomatoes_generation",
        demo__rows=400,
        generation__epochs=1,
        generation__max_new_tokens=8,
        generation__max_perplexity=5000.0,
        registry__model_name="rt-generator-test",
    )
    result = pipeline(config_path=str(config), home=str(home.root))

    # a registered version carrying test_perplexity, its samples in the model card
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("rt-generator-test", result["model_version"])
    perplexity = client.get_run(version.run_id).data.metrics["test_perplexity"]
    assert 1.0 < perplexity <= 5000.0 and perplexity == pytest.approx(result["test_metrics"]["perplexity"])
    assert "champion" in result["aliases"] and version.tags["sluice.gate.perplexity"].startswith("passed")
    card = version.description
    assert "## Samples" in card and result["samples"]
    for prompt in result["samples"]:
        assert prompt.replace("|", "\\|") in card

    # rows conserved; the plot summaries quarantined with their reason
    rows = result["rows"]
    assert rows["rows_in"] == 400
    kept = rows["trainable"] + rows["awaiting"] + rows["gap"] + rows["holdout"]
    assert rows["rows_in"] == kept + rows["quarantined_total"] and sum(rows["splits"].values()) == rows["trainable"]
    quarantine = pd.read_parquet(result["quarantine_path"])
    assert len(quarantine) == rows["quarantined_total"] > 0 and quarantine["reason"].str.len().min() > 0
    plot = quarantine[quarantine["row"].str.contains('"plot"')]
    assert len(plot) and plot["step"].str.startswith("expectations").all(), quarantine[["step", "reason"]]

    # the registered model generates from a prompt in a fresh process
    served = _generate_in_fresh_process(f"models:/rt-generator-test/{version.version}", mlflow_store, ["this movie"])
    assert served[0]["prompt"] == "this movie" and served[0]["text"].strip()

    # identical inputs again: the existing version is reported, nothing is trained or registered
    again = pipeline(config_path=str(config), home=str(home.root))
    assert again["existing"] and again["model_version"] == str(version.version)
    assert again["test_metrics"]["perplexity"] == pytest.approx(perplexity)
