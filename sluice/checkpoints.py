"""Training checkpoints that outlive a flow run: one folder per training's inputs, claimed by one run at a time.

A `sluice run` killed at epoch 14 of 200 leaves `last.pt` in the folder of its input key. The next run with
the same inputs claims the folder, learns which flow run left it (to mark that run crashed: its process is
gone, so Prefect never heard it end) and resumes after epoch 14. Two live runs of the same inputs never
share a folder: the second is refused while the first one's process is alive.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from sluice.processes import pid_alive
from tasks.train import CHECKPOINT_FILE, TrainConfig

OWNER_FILE = "owner.json"


class CheckpointBusyError(RuntimeError):
    """Another live run is training the same inputs into the same checkpoint folder."""


@dataclass(frozen=True)
class Claim:
    """A checkpoint folder claimed by this run, and what an earlier run left in it."""

    directory: Path
    previous_run: str | None  # the flow run that wrote the folder's checkpoint and is gone, if another one
    has_checkpoint: bool


def checkpoint_folder(inputs: Path, config: TrainConfig) -> Path:
    """The folder of one training: the folder of the run's input key, then the (possibly tuned) training config."""
    # How many processes train it is not part of it: a checkpoint resumes on one process or on N.
    chosen = config.model_dump_json(exclude={"distributed"})
    return inputs / hashlib.sha256(chosen.encode()).hexdigest()[:12]


def claim_checkpoints(directory: Path, *, flow_run: str, pid: int | None = None) -> Claim:
    """Claim `directory` for `flow_run` (this process unless `pid`).

    Raises:
        CheckpointBusyError: a live process of another run holds it.
    """
    pid = os.getpid() if pid is None else pid
    directory.mkdir(parents=True, exist_ok=True)
    owner_path = directory / OWNER_FILE
    previous = _read_owner(owner_path)
    host = socket.gethostname()
    previous_run = None
    if previous is not None and previous.get("flow_run") != flow_run:
        same_host = previous.get("host") == host
        if same_host and previous.get("pid") != pid and pid_alive(int(str(previous.get("pid", 0)))):
            raise CheckpointBusyError(
                f"flow run {previous.get('flow_run')} (pid {previous.get('pid')}) is training the same inputs "
                f"into {directory}: wait for it to finish, or stop it, then run again"
            )
        previous_run = str(previous.get("flow_run")) if previous.get("flow_run") else None
    tmp = owner_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"flow_run": flow_run, "pid": pid, "host": host}))
    tmp.replace(owner_path)
    return Claim(directory, previous_run, (directory / CHECKPOINT_FILE).is_file())


def _read_owner(path: Path) -> dict[str, object] | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None
