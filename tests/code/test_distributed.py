"""`train.distributed`: DDP across 2 CPU processes (gloo) matches one process, resumes after a killed rank,
refuses what it cannot do, and names the rank that failed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from sluice.config import PipelineConfig
from tasks.distributed import _rank_failure
from tasks.train import TrainConfig, TrainResult, train_model
from tasks.tune import grid_search
from tests.code.test_train import CLASSES, make_reviews, tiny_text_config

# No dropout: with equal slices of each global batch, DDP's mean of the ranks' gradients is one process's
# gradient, so the two runs differ only by float summation order.
_EPOCHS = 5
_TOLERANCE = 1e-4  # on val_loss, every epoch


def _config(**overrides: object) -> TrainConfig:
    return tiny_text_config(dropout=0.0, epochs=_EPOCHS, **overrides)


def _train(data: tuple[pd.DataFrame, pd.DataFrame], config: TrainConfig, **kwargs: object) -> TrainResult:
    train, val = data
    return train_model(train, val, label_col="label", classes=CLASSES, config=config, text_col="text", **kwargs)  # type: ignore[arg-type]


def _kill_after_epoch_two(epoch: int, record: dict[str, float]) -> None:
    """on_epoch for rank 0: SIGKILL this rank after epoch 2's checkpoint (no exception, no cleanup).

    Rank 1 is then inside epoch 3's collectives; a timer would kill later in the epoch, but a fast machine
    could finish first, so the kill is here, where it cannot miss.
    """
    if epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def reviews() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_reviews(240, seed=1), make_reviews(80, seed=2)


@pytest.fixture(scope="module")
def one_process(reviews: tuple[pd.DataFrame, pd.DataFrame]) -> TrainResult:
    return _train(reviews, _config())


def test_two_processes_match_one_and_resume_after_a_killed_rank(
    reviews: tuple[pd.DataFrame, pd.DataFrame], one_process: TrainResult, tmp_path: Path
) -> None:
    """One test, two launches (each spawns 2 workers that import torch: ~15 s apiece on 2 busy cores)."""
    config = _config(distributed={"nproc_per_node": 2})
    with pytest.raises(RuntimeError, match=r"train\.distributed: rank 0 of 2 .*killed by SIGKILL"):
        _train(reviews, config, checkpoint_dir=tmp_path, on_epoch=_kill_after_epoch_two)

    resumed = _train(reviews, config, checkpoint_dir=tmp_path)

    assert resumed.resumed_from_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [float(e) for e in range(1, _EPOCHS + 1)]
    # Epochs before the kill come from the checkpoint, the rest from the rerun: all match one process.
    for mine, theirs in zip(resumed.history, one_process.history, strict=True):
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], abs=_TOLERANCE)
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=_TOLERANCE)
    assert resumed.history[-1]["val_loss"] < resumed.history[0]["val_loss"]  # it learned
    # Rank 0 checkpointed the bare module (no DDP "module." prefix); its predictor serves here, on the CPU.
    state = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert state.keys() == one_process.predictor.model.state_dict().keys()
    assert resumed.device == "cpu"
    predicted = resumed.predictor.predict(reviews[1])
    assert (predicted == reviews[1]["label"].to_numpy()).mean() >= 0.9


@pytest.mark.parametrize("value", [0, -1, "two"])
def test_a_bad_process_count_is_refused_naming_the_setting(value: object) -> None:
    with pytest.raises(ValidationError, match=r"train\.distributed\.nproc_per_node"):
        _config(distributed={"nproc_per_node": value})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "text", "architecture": "transformer"}, "does not support architecture 'transformer'"),
        ({"batch_size": 3}, r"train\.batch_size 3 is the global batch.*at least 4"),
        ({"device": "cpu", "distributed": {"nproc_per_node": 2, "backend": "nccl"}}, "needs CUDA"),
    ],
)
def test_unsupported_combinations_are_refused(
    reviews: tuple[pd.DataFrame, pd.DataFrame], overrides: dict[str, object], message: str
) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        _train(reviews, _config(**{"distributed": {"nproc_per_node": 2}, **overrides}))  # type: ignore[arg-type]


def test_tuning_trials_are_refused(reviews: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match=r"tuning trials .* train\.distributed"):
        grid_search(
            *reviews,
            base=_config(distributed={"nproc_per_node": 2}),
            grid={"lr": [1e-2]},
            label_col="label",
            classes=CLASSES,
            text_col="text",
        )


def test_a_pipeline_config_with_tuning_and_distributed_is_refused() -> None:
    raw = {
        "name": "reviews",
        "source": {"path": "data.csv"},
        "labels": {"column": "label", "classes": CLASSES},
        "registry": {"model_name": "m"},
        "train": {"distributed": {"nproc_per_node": 2}},
        "tuning": {"method": "grid", "grid": {"lr": [0.01]}},
    }
    with pytest.raises(ValidationError, match=r"tuning\.method .* train\.distributed"):
        PipelineConfig.model_validate(raw)


def test_a_rank_error_keeps_its_type_and_names_the_rank(tmp_path: Path) -> None:
    # Rank 1's broken collective is written first, but it is the consequence of rank 0's error.
    reports = [
        (1, 1.0, "RuntimeError", "[gloo/transport/tcp/pair.cc:537] Connection reset by peer", True),
        (0, 2.0, "FloatingPointError", "training loss became nan at epoch 3", False),
    ]
    for rank, when, kind, message, collective in reports:
        report = {"rank": rank, "time": when, "type": kind, "message": message, "collective": collective}
        (tmp_path / f"rank-{rank}.error.json").write_text(json.dumps(report))

    error = _rank_failure(tmp_path, None, nproc=2, since=0.0)

    assert isinstance(error, FloatingPointError)
    assert str(error) == "train.distributed: rank 0 of 2 failed: training loss became nan at epoch 3"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none on this machine")
def test_nccl_ranks_train_on_their_gpus(reviews: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    nproc = min(2, torch.cuda.device_count())  # one rank a GPU; a one-GPU machine runs a world of one
    config = _config(device="cuda", precision="fp32", distributed={"nproc_per_node": nproc})

    result = _train(reviews, config, checkpoint_dir=tmp_path)

    assert result.device == "cuda:0"
    assert [h["epoch"] for h in result.history] == [float(e) for e in range(1, _EPOCHS + 1)]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert (result.predictor.predict(reviews[1]) == reviews[1]["label"].to_numpy()).mean() >= 0.9
