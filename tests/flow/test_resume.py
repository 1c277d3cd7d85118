"""A `sluice run` killed mid-training and started again with the same inputs resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

SLUICE = str(Path(sys.executable).with_name("sluice"))
EPOCHS = 30


def _owner_once_trained(checkpoints: Path, process: subprocess.Popen[str], timeout: float = 300) -> dict[str, str]:
    """The owner record of the first checkpoint folder, once its `last.pt` holds an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed mid-training"
        for last in checkpoints.glob("*/*/last.pt"):
            return dict(json.loads((last.parent / "owner.json").read_text()))
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def _state_of(flow_run_id: str) -> tuple[str, str]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(flow_run_id)).state
    assert state is not None
    return state.type.value, state.message or ""


@pytest.mark.usefixtures("prefect_server")
def test_a_killed_run_resumes_from_its_checkpoint_and_is_marked_crashed(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "XDG_", "SLUICE_"))}
    env |= {"SLUICE_HOME": str(tmp_path / "home"), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    config = make_config(
        "make_classification",
        demo__rows=300,
        tuning={"method": "none", "cross_validate": False},
        train__epochs=EPOCHS,
        train__patience=EPOCHS,  # no early stop: the run is still training when it is killed
        train__batch_size=8,
        registry__model_name="mc-resume",
        registry__promotion={"floors": {}, "first_run": "promote"},
    )
    command = [SLUICE, "run", "--config", str(config)]
    first = subprocess.Popen(
        command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        owner = _owner_once_trained(tmp_path / "home" / "checkpoints", first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # no handler runs: Prefect never hears the run end
        first.communicate(timeout=60)
    assert _state_of(owner["flow_run"])[0] == "RUNNING"

    second = subprocess.run(command, env=env, text=True, capture_output=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = [line for line in second.stdout.splitlines() if line.startswith("  train       resumed after epoch ")]
    assert resumed, second.stdout
    epoch = int(resumed[0].split("epoch ")[1].split(":")[0])
    assert 1 <= epoch < EPOCHS
    assert "model       mc-resume version 1" in second.stdout
    state, message = _state_of(owner["flow_run"])
    assert state == "CRASHED" and "resumed its training" in message

    # One folder for the inputs, now the second run's, its checkpoint at the last epoch.
    import torch

    (last,) = (tmp_path / "home" / "checkpoints").glob("*/*/last.pt")
    assert json.loads((last.parent / "owner.json").read_text())["flow_run"] != owner["flow_run"]
    assert torch.load(last, weights_only=False)["epoch"] == EPOCHS
