"""DDP training across processes on this machine: `train.distributed: {nproc_per_node: N}`.

`train_model` hands over to `train_distributed` when `config.distributed` is set. It starts N workers
with torch's elastic launcher (`torch.distributed.launcher.api.elastic_launch`) from inside the call:

- its c10d rendezvous binds port 0 on 127.0.0.1 in this process and hands the port to the workers, so no
  free port is probed and then raced for (pytest-xdist runs tests side by side);
- its agent watches the workers: when one fails or is killed it stops the others and returns, instead of
  leaving them blocked in a collective (`torch.multiprocessing.start_processes` would need both by hand);
- it spawns the workers, so the entry point `_rank_main` is a module-level function and everything it gets
  (frames, config, `on_epoch`) is pickled.

Each rank sets up the same predictor from the same frames and seed, wraps the model in
`DistributedDataParallel` (gloo on CPU, NCCL on CUDA, one GPU a rank) and trains on its slice of every
global batch (`tasks/train.py:_train_epoch`: `train.batch_size` stays the global batch). Rank 0 evaluates,
checkpoints, logs, calls `on_epoch` and writes its `TrainResult` to a file that this process reads back.
A failing rank writes what failed to an error file; this process raises one error naming the rank.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist

from tasks import train as train_stage

logger = logging.getLogger(__name__)

RESULT_FILE = "result-rank0.pt"
# Exception types a rank's error keeps (the CLI maps them to exit codes); anything else becomes RuntimeError.
_KEPT_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e for e in (ValueError, KeyError, TypeError, FloatingPointError, RuntimeError, ImportError)
}
_LAUNCHER_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


@dataclass
class _RankJob:
    """What every rank needs to set up the same training (pickled once per worker)."""

    train: pd.DataFrame
    val: pd.DataFrame
    label_col: str
    classes: list[str]
    config: train_stage.TrainConfig
    text_col: str | None
    feature_cols: list[str] | None
    image_col: str | None
    audio_col: str | None
    checkpoint_dir: str | None
    on_epoch: Callable[[int, dict[str, float]], None] | None
    device_type: str
    backend: str


def train_distributed(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    label_col: str,
    classes: list[str],
    config: train_stage.TrainConfig,
    text_col: str | None = None,
    feature_cols: list[str] | None = None,
    image_col: str | None = None,
    audio_col: str | None = None,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> train_stage.TrainResult:
    """`train_model` under DDP across `config.distributed.nproc_per_node` processes; rank 0's result.

    Raises:
        ValueError: a setting the launch cannot honour (more ranks than GPUs or rows, NCCL without CUDA,
            an `on_epoch` that cannot be pickled), or what a rank raised for bad input.
        FloatingPointError: a rank's loss diverged.
        RuntimeError: a rank failed otherwise or was killed; the message names the rank.
    """
    assert config.distributed is not None
    train_stage._check_inputs(train, val, label_col=label_col, classes=classes)
    nproc = config.distributed.nproc_per_node
    device_type = _device_type(config, nproc)
    backend = _backend(config.distributed.backend, device_type)
    if len(train) < 2 * nproc:
        raise ValueError(
            f"train has {len(train)} rows, fewer than two for each of train.distributed.nproc_per_node {nproc} "
            "processes; lower nproc_per_node or remove train.distributed"
        )
    if on_epoch is not None:
        try:
            pickle.dumps(on_epoch)
        except Exception as err:
            raise ValueError(
                f"on_epoch {on_epoch!r} cannot be pickled ({err}); under train.distributed it runs in rank 0's "
                "process, so pass a module-level function"
            ) from None
    job = _RankJob(
        train=train,
        val=val,
        label_col=label_col,
        classes=classes,
        config=config,
        text_col=text_col,
        feature_cols=feature_cols,
        image_col=image_col,
        audio_col=audio_col,
        checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
        on_epoch=on_epoch,
        device_type=device_type,
        backend=backend,
    )
    logger.info("train.distributed: DDP on %d %s processes, backend %s", nproc, device_type, backend)
    with tempfile.TemporaryDirectory(prefix="sluice-ddp-") as work:
        _launch(job, Path(work), nproc=nproc, timeout_s=config.distributed.timeout_s)
        result: train_stage.TrainResult = torch.load(Path(work) / RESULT_FILE, weights_only=False)
    return result


def _device_type(config: train_stage.TrainConfig, nproc: int) -> str:
    """cuda (one GPU a rank) or cpu, from `config.device`, checked against the GPUs there are."""
    device = train_stage.choose_device(config.device).type
    if device == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(
            f"train.distributed.nproc_per_node is {nproc} but torch sees {torch.cuda.device_count()} CUDA "
            "device(s); DDP on CUDA runs one process a GPU: lower nproc_per_node, or set train.device: cpu"
        )
    return device


def _backend(requested: str, device_type: str) -> str:
    if requested == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if requested == "nccl" and device_type != "cuda":
        raise ValueError("train.distributed.backend 'nccl' needs CUDA; on CPU use 'gloo' (or 'auto')")
    return requested


def _launch(job: _RankJob, work: Path, *, nproc: int, timeout_s: float) -> None:
    """Run `_rank_main` on `nproc` spawned workers; a failed rank raises here with its rank and error."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"sluice-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # port 0: the agent's store binds a free port and tells the workers
        rdzv_configs={"timeout": int(timeout_s)},
        max_restarts=0,  # a failed rank fails the run; rerunning resumes from the last checkpoint
        monitor_interval=0.1,
        start_method="spawn",
        local_addr="127.0.0.1",
        logs_specs=DefaultLogsSpecs(log_dir=os.fspath(work / "logs")),
    )
    started = time.time()
    try:
        with _signal_handlers_restored():
            elastic_launch(launch_config, _rank_main)(job, os.fspath(work))
    except ChildFailedError as err:
        raise _rank_failure(work, err, nproc=nproc, since=started) from None
    except SignalException as err:
        if err.sigval == signal.SIGINT:
            raise KeyboardInterrupt from err
        raise


@contextmanager
def _signal_handlers_restored() -> Iterator[None]:
    """The launcher installs its own handlers for SIGINT/SIGTERM/… in the main thread; put ours back after."""
    saved = {name: signal.getsignal(getattr(signal, name)) for name in _LAUNCHER_SIGNALS if hasattr(signal, name)}
    env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    try:
        yield
    finally:
        for name, handler in saved.items():
            if handler is not None:
                try:
                    signal.signal(getattr(signal, name), handler)
                except ValueError:  # not the main thread: the launcher did not install any either
                    pass
        if env is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
        else:
            os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = env


def _rank_failure(work: Path, err: Any, *, nproc: int, since: float) -> Exception:
    """One error for the rank that failed first, whatever the others reported after it.

    A rank dies in one of three ways, and this order finds the cause: it raised (its error file; the
    earliest wins), it was killed or crashed without a word (in the launcher's failures with no error file:
    a SIGKILL, the OOM killer, a segfault), or its collective broke because a peer had gone (gloo's
    "connection reset", NCCL's abort): a consequence, reported only when nothing else explains the stop.
    """
    reports = []
    for path in work.glob("rank-*.error.json"):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    raised = sorted((r for r in reports if not r.get("collective")), key=lambda r: r["time"])
    if raised:
        return _raised_error(raised[0], nproc)
    reported = {int(r["rank"]) for r in reports}
    failures = dict(err.failures) if err is not None else {}
    silent = {rank: f for rank, f in failures.items() if rank not in reported}
    if silent:
        # The agent stops the survivors with SIGTERM; a rank that died of anything else went first.
        rank, failure = min(silent.items(), key=lambda item: (item[1].exitcode == -signal.SIGTERM, item[1].timestamp))
        return RuntimeError(
            f"train.distributed: rank {rank} of {nproc} (pid {failure.pid}) stopped after "
            f"{time.time() - since:.0f} s: {_how_it_ended(failure.exitcode)}; the other ranks were stopped. "
            "Rerun with the same checkpoint directory to resume from the last finished epoch"
        )
    if reports:
        return _raised_error(min(reports, key=lambda r: r["time"]), nproc)
    rank, failure = err.get_first_failure()
    return RuntimeError(f"train.distributed: rank {rank} of {nproc} failed: {_how_it_ended(failure.exitcode)}")


def _raised_error(report: dict[str, Any], nproc: int) -> Exception:
    kind = _KEPT_ERRORS.get(report["type"], RuntimeError)
    detail = report["message"] if kind is not RuntimeError else f"{report['type']}: {report['message']}"
    return kind(f"train.distributed: rank {report['rank']} of {nproc} failed: {detail}")


def _how_it_ended(exitcode: int) -> str:
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        return f"killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"killed by signal {-exitcode}"


def _rank_main(job: _RankJob, work: str) -> None:
    """One worker: join the process group, train its share, and (rank 0) write the result."""
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    try:
        result = _train_rank(job, rank=rank, local_rank=local_rank, world_size=world_size)
        if rank == 0:
            path = Path(work) / RESULT_FILE
            torch.save(result, path.with_suffix(".tmp"))
            os.replace(path.with_suffix(".tmp"), path)
        dist.destroy_process_group()
    except BaseException as err:
        _write_error(Path(work), rank, err)
        raise


def _train_rank(job: _RankJob, *, rank: int, local_rank: int, world_size: int) -> train_stage.TrainResult:
    config = job.config
    assert config.distributed is not None
    if job.device_type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # The ranks share the machine's cores; more threads than cores a rank only contend.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(
        job.backend,
        timeout=timedelta(seconds=config.distributed.timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    # Only rank 0 logs the run; a spawned worker has no handlers, so its lines go to the inherited stderr.
    tasks_logger = logging.getLogger("tasks")
    if rank == 0 and not tasks_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s rank 0 %(name)s: %(message)s"))
        tasks_logger.addHandler(handler)
        tasks_logger.setLevel(logging.INFO)
    elif rank != 0:
        tasks_logger.setLevel(logging.WARNING)
    run = train_stage._set_up_training(
        job.train,
        job.val,
        label_col=job.label_col,
        classes=job.classes,
        config=config,
        text_col=job.text_col,
        feature_cols=job.feature_cols,
        image_col=job.image_col,
        audio_col=job.audio_col,
        device=device,
    )
    run.rank, run.world_size = rank, world_size
    # DDP broadcasts rank 0's weights on construction and averages gradients in backward.
    run.ddp = torch.nn.parallel.DistributedDataParallel(
        run.model, device_ids=[local_rank] if device.type == "cuda" else None
    )
    return train_stage._train_prepared(
        run,
        config,
        n_rows=len(job.train),
        n_classes=len(job.classes),
        checkpoint_dir=None if job.checkpoint_dir is None else Path(job.checkpoint_dir),
        on_epoch=job.on_epoch if rank == 0 else None,
    )


def _write_error(work: Path, rank: int, err: BaseException) -> None:
    report = {
        "rank": rank,
        "time": time.time(),
        "type": type(err).__name__,
        "message": str(err) if not isinstance(err, KeyError) else str(err.args[0] if err.args else err),
        "traceback": traceback.format_exc(),
        "collective": _is_collective_error(err),
    }
    try:
        (work / f"rank-{rank}.error.json").write_text(json.dumps(report))
    except OSError:
        pass


def _is_collective_error(err: BaseException) -> bool:
    """A collective that broke because a peer went away: a consequence of another rank's failure."""
    text = str(err)
    markers = ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer", "Broken pipe")
    return isinstance(err, dist.DistError) or any(m in text for m in markers)
