"""Checkpoint folders by input key: one live run at a time, and the run that stopped is named for the next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluice.checkpoints import CheckpointBusyError, checkpoint_folder, claim_checkpoints
from tasks.train import TrainConfig


def test_the_folder_follows_the_inputs_and_the_chosen_config(tmp_path: Path) -> None:
    base = TrainConfig(task="tabular", architecture="mlp")
    assert checkpoint_folder(tmp_path / "k1", base) == checkpoint_folder(tmp_path / "k1", base.model_copy())
    assert checkpoint_folder(tmp_path / "k1", base) != checkpoint_folder(
        tmp_path / "k1", base.model_copy(update={"lr": 0.1})
    )
    assert checkpoint_folder(tmp_path / "k1", base).parent != checkpoint_folder(tmp_path / "k2", base).parent
    ddp = base.model_copy(update={"distributed": {"nproc_per_node": 2}})
    assert checkpoint_folder(tmp_path / "k1", ddp) == checkpoint_folder(tmp_path / "k1", base)


def test_a_live_run_holds_its_folder_and_a_gone_one_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "key" / "config"
    first = claim_checkpoints(folder, flow_run="run-1")
    assert first.previous_run is None and not first.has_checkpoint
    assert claim_checkpoints(folder, flow_run="run-1").previous_run is None  # a Prefect retry of the same run
    with pytest.raises(CheckpointBusyError, match="run-1"):  # this process is alive and holds it
        claim_checkpoints(folder, flow_run="run-2", pid=1)
    claim_checkpoints(folder, flow_run="run-1", pid=_a_finished_pid())

    assert claim_checkpoints(folder, flow_run="run-2", pid=_a_finished_pid()).previous_run == "run-1"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim_checkpoints(folder, flow_run="run-2", pid=alive.pid)
        with pytest.raises(CheckpointBusyError, match=f"run-2 \\(pid {alive.pid}\\) is training the same inputs"):
            claim_checkpoints(folder, flow_run="run-3")
    finally:
        alive.kill()
        alive.wait()
    (folder / "last.pt").write_bytes(b"a checkpoint")
    taken = claim_checkpoints(folder, flow_run="run-3")  # run-2's process is gone: its folder is taken over
    assert taken.previous_run == "run-2" and taken.has_checkpoint


def _a_finished_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid
