"""Train a classifier on a train/val split: one config in, a `Predictor` and its history out.

Choices made once, up front, and logged: device (CUDA else CPU), precision (bf16 where the GPU has
it, else fp16 with a GradScaler; fp32 on CPU), data loading (in-memory tensors sliced by a shuffled
index: per-sample `__getitem__` + collate is ~7x slower here). Each epoch is checkpointed to
`checkpoint_dir/last.pt`; a rerun with the same directory resumes where the last one stopped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from tasks.featurize import BagInputs, EncodedInputs, TensorInputs, TokenInputs
from tasks.modalities import get_modality, require_columns, resolve_architecture
from tasks.models import INITS, ModelSpec, build_model, count_parameters
from tasks.predictor import Predictor

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad", "rmsprop")
MONITORS = ("val_loss", "val_accuracy", "val_f1_macro")
CHECKPOINT_FILE = "last.pt"
# Fields that may differ between an interrupted run and its resumption without changing the result's meaning.
_RESUME_FREE_FIELDS = {
    "epochs",
    "patience",
    "progress",
    "num_workers",
    "pin_memory",
    "data_on_device",
    "device",
    "eval_batch_size",
    # The global batch and the global row order do not depend on how many processes share them.
    "distributed",
}
# On a GPU the loop reads losses back every this many batches (one sync), not after each batch.
_FINITE_CHECK_EVERY = 32


class DistributedConfig(BaseModel):
    """`train.distributed`: DDP over N processes on this machine (`tasks/distributed.py`)."""

    model_config = ConfigDict(extra="forbid")

    nproc_per_node: int
    # gloo on CPU, NCCL on CUDA; "auto" picks by the device.
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    # Seconds a collective (or the rendezvous) may wait for the other ranks before the run fails.
    timeout_s: float = Field(300.0, gt=0.0)

    @field_validator("nproc_per_node", mode="before")
    @classmethod
    def _at_least_one(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"train.distributed.nproc_per_node is {value!r}; it must be a whole number >= 1 (the processes "
                "to train in; remove train.distributed to train in this process)"
            )
        return value


class TrainConfig(BaseModel):
    """Every training choice, with its default. Unknown keys are rejected (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")

    # A registered modality (tasks/modalities/): "text", "tabular", "image", "audio".
    task: str = "text"
    # The modality's architectures: text "hashed_bag" (fast, from scratch) | "transformer" (fine-tune from
    # pretrained_dir); tabular "mlp"; image "cnn"; "auto" picks the first.
    architecture: str = "auto"
    pretrained_dir: str | None = None

    # network
    hidden: list[int] = Field(default_factory=lambda: [64])
    activation: str = "relu"
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    norm: Literal["none", "batch", "layer"] = "none"
    init: str = "auto"

    # text features (hashed_bag): word n-grams plus character n-grams inside each word
    # 2**17 x 32 keeps AdamW's dense update at ~30 ms a batch on 2 CPU cores (2**18 x 64 takes ~160 ms)
    n_buckets: int = Field(2**17, ge=16)
    embed_dim: int = Field(32, ge=1)
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] | None = (3, 5)
    max_length: int = Field(128, ge=8)  # transformer tokens

    # image network
    channels: list[int] = Field(default_factory=lambda: [16, 32])
    kernel_size: int = Field(3, ge=1)

    # optimisation
    optimizer: str = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.9, ge=0.0)  # sgd and rmsprop
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0.0)  # L2 (decoupled for adamw); not applied to biases and norms
    l1: float = Field(0.0, ge=0.0)  # L1 penalty on weights, added to the loss
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    scheduler: Literal["none", "step", "cosine", "plateau"] = "none"
    warmup_epochs: float = Field(0.0, ge=0.0)  # linear warm-up, per batch; with none/step/cosine
    step_size: int = Field(10, ge=1)  # epochs between "step" decays
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # decay factor for step and plateau
    plateau_patience: int = Field(1, ge=0)
    grad_clip: float | None = Field(None, gt=0.0)  # max global gradient norm
    class_weights: Literal["none", "balanced"] | list[float] = "none"

    # schedule and stopping
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    patience: int = Field(3, ge=1)  # epochs without improvement before stopping
    monitor: Literal["val_loss", "val_accuracy", "val_f1_macro"] = "val_loss"
    min_delta: float = Field(0.0, ge=0.0)

    # reproducibility and hardware
    seed: int = 42
    deterministic: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_workers: int = Field(0, ge=0)
    pin_memory: bool | Literal["auto"] = "auto"  # auto: on CUDA, for batches built on the host
    # Dense in-memory inputs (tabular, images) copied to the GPU once and sliced there: no host copy per
    # batch. auto: on CUDA, when they take under a quarter of the free GPU memory and num_workers is 0.
    data_on_device: bool | Literal["auto"] = "auto"
    progress: bool | Literal["auto"] = "auto"
    # None: one process, in the caller's. Set: DDP across nproc_per_node processes (tasks/distributed.py).
    distributed: DistributedConfig | None = None

    @field_validator("pretrained_dir", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        get_modality(value)  # raises naming train.task and the registered modalities
        return value

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        if value not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {value!r}; valid: {list(OPTIMIZERS)}")
        return value

    @field_validator("init")
    @classmethod
    def _known_init(cls, value: str) -> str:
        if value not in INITS:
            raise ValueError(f"unknown init {value!r}; valid: {list(INITS)}")
        return value

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        from tasks.models import ACTIVATIONS

        if value not in ACTIVATIONS:
            raise ValueError(f"unknown activation {value!r}; valid: {sorted(ACTIVATIONS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        resolve_architecture(self.task, self.architecture)  # raises with the valid names
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs optimizer='sgd' with momentum > 0")
        if self.scheduler == "plateau" and self.warmup_epochs > 0:
            raise ValueError("warmup_epochs works with scheduler none/step/cosine, not plateau; set one of them")
        if self.word_ngrams[0] < 1 or self.word_ngrams[0] > self.word_ngrams[1]:
            raise ValueError(f"word_ngrams {self.word_ngrams} must be (low, high) with 1 <= low <= high")
        if self.char_ngrams is not None and (self.char_ngrams[0] < 1 or self.char_ngrams[0] > self.char_ngrams[1]):
            raise ValueError(f"char_ngrams {self.char_ngrams} must be (low, high) with 1 <= low <= high, or None")
        if self.distributed is not None:
            nproc = self.distributed.nproc_per_node
            if self.resolved_architecture == "transformer":
                raise ValueError(
                    "train.distributed does not support architecture 'transformer' yet; "
                    "remove train.distributed or pick architecture 'hashed_bag'"
                )
            if self.batch_size < 2 * nproc:
                raise ValueError(
                    f"train.batch_size {self.batch_size} is the global batch; with train.distributed.nproc_per_node "
                    f"{nproc} it must be at least {2 * nproc} (two rows a process)"
                )
        return self

    @property
    def resolved_architecture(self) -> str:
        return resolve_architecture(self.task, self.architecture)

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        """Loss is minimised, accuracy and F1 maximised."""
        return "min" if self.monitor.endswith("loss") else "max"


@dataclass
class TrainResult:
    """What training produced. `predictor` carries the best epoch's weights."""

    predictor: Predictor
    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float
    stopped_early: bool
    device: str
    precision: str
    resumed_from_epoch: int | None
    samples_per_second: float
    n_parameters: int = 0
    checkpoint_path: Path | None = None

    @property
    def best(self) -> dict[str, float]:
        """The history row of the best epoch."""
        return self.history[self.best_epoch - 1]


# ----------------------------------------------------------------------------------------------------
# Reproducibility, device, precision
# ----------------------------------------------------------------------------------------------------
def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch (all devices); with `deterministic`, ask for deterministic kernels.

    Deterministic mode warns (instead of failing) on ops without a deterministic version, such as
    EmbeddingBag's CUDA backward.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS reads this when it creates its handle; it must be set before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def choose_device(requested: str = "auto") -> torch.device:
    """CUDA when available (or required), else CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA device; set device='auto' or 'cpu'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def choose_precision(device: torch.device, requested: str = "auto") -> tuple[str, torch.dtype | None]:
    """The training precision and its autocast dtype (None = plain fp32).

    bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 is the fallback on GPUs
    without bf16 and trains with a GradScaler.
    """
    if requested == "auto":
        if device.type != "cuda":
            return "fp32", None
        requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp32":
        return "fp32", None
    if requested == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RuntimeError("this GPU has no bf16 support; set precision='fp16' or 'auto'")
        return "bf16", torch.bfloat16
    if device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device; on CPU use 'fp32' or 'bf16'")
    return "fp16", torch.float16


# ----------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------
def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser; weight decay applies to weight matrices, not to biases or norm scales."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    lr = config.lr
    # One fused kernel per step instead of one per tensor op: ~4x faster on a CPU for the 4M-weight
    # hashed embedding, where the Adam update is most of a step.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in decay + no_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=config.momentum)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: {list(OPTIMIZERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """Per-batch LambdaLR for warm-up/step/cosine; per-epoch ReduceLROnPlateau on the monitored metric."""
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=config.monitor_mode, factor=config.gamma, patience=config.plateau_patience
        )
    if config.scheduler == "none" and config.warmup_epochs == 0:
        return None
    warm = int(round(config.warmup_epochs * steps_per_epoch))
    total = config.epochs * steps_per_epoch
    kind, gamma, step_size = config.scheduler, config.gamma, config.step_size

    def factor(step: int) -> float:
        scale = (step + 1) / warm if step < warm else 1.0
        if kind == "cosine":  # Loshchilov & Hutter (2017), without restarts, after the warm-up
            progress = min(1.0, max(0, step - warm) / max(1, total - warm))
            return scale * 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "step":
            return scale * gamma ** ((step // steps_per_epoch) // step_size)
        return scale

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weight_tensor(y: torch.Tensor, n_classes: int, setting: str | list[float]) -> torch.Tensor | None:
    """Loss weights per class: None, "balanced" (n / (k * count), as in scikit-learn), or explicit."""
    if setting == "none":
        return None
    if setting == "balanced":
        counts = torch.bincount(y, minlength=n_classes).double()
        weights = len(y) / (n_classes * counts.clamp(min=1))
        return weights.float()
    if len(setting) != n_classes:
        raise ValueError(f"class_weights has {len(setting)} entries for {n_classes} classes; give one per class")
    return torch.tensor(setting, dtype=torch.float32)


def train_step(
    model: nn.Module,
    args: tuple[torch.Tensor, ...],
    y: torch.Tensor,
    *,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    autocast: AbstractContextManager[Any],
    l1: float = 0.0,
    l1_params: list[nn.Parameter] | None = None,
    grad_clip: float | None = None,
    where: str = "",
    check_finite: bool = True,
) -> torch.Tensor:
    """One optimisation step; returns the detached batch loss.

    Args:
        check_finite: stop before the update if the loss is NaN/inf. It reads the loss on the host,
            a sync that keeps a GPU from running ahead; the training loop checks the GPU's losses
            in bulk instead (`raise_if_diverged`).

    Raises:
        FloatingPointError: the loss is NaN or infinite (message says where and what to change).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        loss = loss_fn(model(*args).float(), y)
    if l1 and l1_params:
        loss = loss + l1 * sum(p.abs().sum() for p in l1_params)
    if check_finite and not torch.isfinite(loss):
        raise FloatingPointError(_diverged_message(float(loss.detach()), where))
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    else:
        loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach()


def _diverged_message(value: float, where: str) -> str:
    return (
        f"training loss became {value} at {where}; lower the learning rate "
        "(or set grad_clip, or check the inputs for NaN)"
    )


def raise_if_diverged(losses: torch.Tensor, *, first_batch: int, epoch: int, n_batches: int) -> None:
    """Raise naming the first non-finite loss among `losses` (batch numbers count from `first_batch`)."""
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        index = int(bad[0])
        where = f"epoch {epoch}, batch {first_batch + index}/{n_batches}"
        raise FloatingPointError(_diverged_message(float(losses[index]), where))


def eval_step(model: nn.Module, args: tuple[torch.Tensor, ...], autocast: AbstractContextManager[Any]) -> torch.Tensor:
    """Logits (float32) for one batch, without building a graph."""
    with torch.inference_mode(), autocast:
        return model(*args).float()


def classification_scores(y: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[float, float]:
    """(accuracy, macro F1 over all classes) from integer labels; an absent, unpredicted class scores 0."""
    if len(y) == 0:
        return float("nan"), float("nan")
    cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(tp.sum() / len(y)), float(f1.mean())


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
def encode_labels(series: pd.Series, classes: list[str], label_col: str) -> torch.Tensor:
    """Class indices for a label column; unknown labels are an error."""
    index = {c: i for i, c in enumerate(classes)}
    values = series.astype(str).tolist() if series.notna().all() else None
    if values is None:
        raise ValueError(
            f"column {label_col!r} has {int(series.isna().sum())} missing labels; drop or label those rows"
        )
    unknown = sorted({v for v in values if v not in index})
    if unknown:
        raise ValueError(
            f"column {label_col!r} has labels {unknown[:10]} not in classes {classes}; "
            "add them to classes or drop those rows"
        )
    return torch.tensor([index[v] for v in values], dtype=torch.int64)


def _batch_rows(order: torch.Tensor, batch_size: int, min_rows: int = 2) -> list[torch.Tensor]:
    chunks = list(torch.split(order, batch_size))
    # A final batch of one row breaks BatchNorm in training mode; fold it into the previous batch.
    # Under DDP each rank takes a slice of every batch, so the last one needs two rows a rank.
    if len(chunks) > 1 and len(chunks[-1]) < min_rows:
        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


class _BatchDataset(torch.utils.data.Dataset[tuple[torch.Tensor, ...]]):
    """Whole batches as items, so DataLoader workers slice tensors instead of collating samples."""

    def __init__(self, inputs: EncodedInputs, y: torch.Tensor, batches: list[torch.Tensor]) -> None:
        self.inputs, self.y, self.batches = inputs, y, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        rows = self.batches[i]
        return (*self.inputs.take(rows), self.y[rows])


def _iterate_batches(
    inputs: EncodedInputs, y: torch.Tensor, batches: list[torch.Tensor], *, num_workers: int, pin: bool
) -> Iterator[tuple[torch.Tensor, ...]]:
    if num_workers > 0:
        loader = torch.utils.data.DataLoader(
            _BatchDataset(inputs, y, batches),
            batch_size=None,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=pin,
            # Workers' seeds come from this generator, not from the global RNG that dropout draws on.
            generator=torch.Generator().manual_seed(0),
        )
        yield from loader
        return
    for rows in batches:
        parts = (*inputs.take(rows), y[rows])
        # Pinned (page-locked) host memory lets the copy to the GPU run asynchronously (non_blocking).
        yield tuple(t.pin_memory() for t in parts) if pin else parts


def _fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _inputs_tensors(inputs: EncodedInputs) -> tuple[torch.Tensor, ...]:
    if isinstance(inputs, BagInputs):
        return inputs.ids, inputs.offsets
    if isinstance(inputs, TokenInputs):
        return inputs.input_ids, inputs.attention_mask
    if not isinstance(inputs, TensorInputs):
        raise TypeError(f"unknown input kind {type(inputs).__name__}")
    return inputs.tensors


# ----------------------------------------------------------------------------------------------------
# Predictor construction (fit the featurisation on train)
# ----------------------------------------------------------------------------------------------------
def _make_predictor(
    train: pd.DataFrame,
    config: TrainConfig,
    classes: list[str],
    *,
    text_col: str | None,
    feature_cols: list[str] | None,
    image_col: str | None,
    audio_col: str | None,
) -> Predictor:
    spec = ModelSpec(
        architecture=config.resolved_architecture,
        n_classes=len(classes),
        hidden=list(config.hidden),
        activation=config.activation,
        dropout=config.dropout,
        norm=config.norm,
        init=config.init,
        n_buckets=config.n_buckets,
        embed_dim=config.embed_dim,
        channels=list(config.channels),
        kernel_size=config.kernel_size,
    )
    columns = {"text_col": text_col, "feature_cols": feature_cols, "image_col": image_col, "audio_col": audio_col}
    encoder = get_modality(config.task).fit_encoder(train, config, spec, columns)
    model = build_model(spec)
    return Predictor(
        model,
        model_spec=spec,
        task=config.task,
        classes=classes,
        features=encoder.features,
        columns=columns,
        tokenizer=encoder.tokenizer,
        batch_size=config.eval_batch_size,
    )


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------
def _progress_enabled(setting: bool | str) -> bool:
    if setting == "auto":
        return sys.stdout.isatty()
    return bool(setting)


def _evaluate(
    model: nn.Module,
    inputs: EncodedInputs,
    y: torch.Tensor,
    *,
    device: torch.device,
    autocast: AbstractContextManager[Any],
    batch_size: int,
    n_classes: int,
) -> dict[str, float]:
    model.eval()
    logits = []
    for rows in torch.split(torch.arange(len(inputs), device=inputs.device), batch_size):
        args = tuple(t.to(device, non_blocking=True) for t in inputs.take(rows))
        logits.append(eval_step(model, args, autocast).cpu())
    scores = torch.cat(logits)
    # Unweighted NLL: class weights and smoothing shape training, the monitor should be the plain loss.
    loss = float(nn.functional.cross_entropy(scores, y))
    accuracy, f1 = classification_scores(y.numpy(), scores.argmax(1).numpy(), n_classes)
    return {"val_loss": loss, "val_accuracy": accuracy, "val_f1_macro": f1}


def _resolve_data_on_device(config: TrainConfig, device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda" or config.data_on_device is False:
        return False
    if config.data_on_device is True:
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return config.num_workers == 0 and nbytes < free // 4


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RESUME_FREE_FIELDS}


@dataclass
class _Training:
    """Everything set up once before the first epoch: model, data on its device, optimiser and friends."""

    predictor: Predictor
    model: nn.Module
    device: torch.device
    precision: str
    train_inputs: EncodedInputs
    val_inputs: EncodedInputs
    y_train: torch.Tensor
    y_val: torch.Tensor
    y_batches: torch.Tensor
    pin: bool
    workers: int
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None
    scaler: torch.amp.GradScaler | None
    autocast: Callable[[], AbstractContextManager[Any]]
    l1_params: list[nn.Parameter] | None
    # Under train.distributed: this process's rank, the world size, and the DDP wrapper that train steps
    # run through (gradients averaged across ranks). `model` stays the bare module: checkpoints and the
    # predictor never see DDP's "module." prefix.
    rank: int = 0
    world_size: int = 1
    ddp: nn.Module | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 (the only process without train.distributed): the one that evaluates, checkpoints and logs."""
        return self.rank == 0


@dataclass
class _Progress:
    """What the epoch loop carries from one epoch to the next (and what a checkpoint restores)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    finished: bool = False
    start_epoch: int = 1
    resumed_from: int | None = None


def _set_up_training(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    label_col: str,
    classes: list[str],
    config: TrainConfig,
    text_col: str | None,
    feature_cols: list[str] | None,
    image_col: str | None,
    audio_col: str | None,
    device: torch.device | None = None,
) -> _Training:
    """Seed, device, precision, encoders, data placement, loss, optimiser and scheduler, chosen once and logged.

    Args:
        device: a DDP rank's own device (`cuda:<local rank>`); None chooses from `config.device`.
    """
    set_seed(config.seed, config.deterministic)
    device = device if device is not None else choose_device(config.device)
    precision, amp_dtype = choose_precision(device, config.precision)

    predictor = _make_predictor(
        train,
        config,
        classes,
        text_col=text_col,
        feature_cols=feature_cols,
        image_col=image_col,
        audio_col=audio_col,
    )
    model = predictor.model.to(device)
    train_inputs, val_inputs = predictor.encode(train), predictor.encode(val)
    y_train = encode_labels(train[label_col], classes, label_col)
    y_val = encode_labels(val[label_col], classes, label_col)

    on_device = _resolve_data_on_device(config, device, train_inputs.nbytes + val_inputs.nbytes)
    if on_device:
        train_inputs, val_inputs = train_inputs.to(device), val_inputs.to(device)
    # Batches of inputs that stay on the host (bags, tokens) still benefit from pinning.
    host_batches = train_inputs.device.type == "cpu"
    pin = host_batches and (device.type == "cuda" if config.pin_memory == "auto" else bool(config.pin_memory))
    workers = config.num_workers if host_batches else 0
    logger.info(
        "training %s on %s, precision %s, data on %s, pin_memory=%s, num_workers=%d",
        config.resolved_architecture,
        device,
        precision,
        train_inputs.device,
        pin,
        workers,
    )

    weights = class_weight_tensor(y_train, len(classes), config.class_weights)
    loss_fn = nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(device), label_smoothing=config.label_smoothing
    )
    optimizer = build_optimizer(model, config)
    world_size = config.distributed.nproc_per_node if config.distributed is not None else 1
    steps_per_epoch = len(_batch_rows(torch.arange(len(train)), config.batch_size, min_rows=2 * world_size))
    autocast: Callable[[], AbstractContextManager[Any]] = (
        (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext
    )
    return _Training(
        predictor=predictor,
        model=model,
        device=device,
        precision=precision,
        train_inputs=train_inputs,
        val_inputs=val_inputs,
        y_train=y_train,
        y_val=y_val,
        y_batches=y_train.to(train_inputs.device),
        pin=pin,
        workers=workers,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, steps_per_epoch),
        scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None,
        autocast=autocast,
        l1_params=[p for p in model.parameters() if p.requires_grad and p.ndim > 1] if config.l1 else None,
    )


def _data_fingerprint(run: _Training) -> str:
    """Hash of the encoded train/val data and labels: a checkpoint resumes only on the same data."""
    return _fingerprint(*_inputs_tensors(run.train_inputs), run.y_train, *_inputs_tensors(run.val_inputs), run.y_val)


def _resume_from_checkpoint(path: Path, run: _Training, config: TrainConfig, fingerprint: str) -> _Progress:
    """Model, optimiser, scheduler, scaler, RNG and loop state from `path`, after checking it fits this run.

    Raises:
        ValueError: the checkpoint was written for another config or other data.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if _comparable(ckpt["config"]) != _comparable(config.model_dump(mode="json")) or (
        ckpt["data_fingerprint"] != fingerprint
    ):
        raise ValueError(
            f"checkpoint {path} was written for another config or other data; delete it or pass a fresh checkpoint_dir"
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scheduler is not None and ckpt["scheduler"] is not None:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler is not None and ckpt["scaler"] is not None:
        run.scaler.load_state_dict(ckpt["scaler"])
    resumed_from = int(ckpt["epoch"])
    progress = _Progress(
        history=list(ckpt["history"]),
        best_metric=ckpt["best_metric"],
        best_epoch=ckpt["best_epoch"],
        best_state=ckpt["best_state"],
        bad_epochs=ckpt["bad_epochs"],
        stopped_early=ckpt["stopped_early"],
        # A changed `epochs` may extend a finished run; early stopping stays final.
        finished=ckpt["stopped_early"] or ckpt["epoch"] >= config.epochs,
        start_epoch=resumed_from + 1,
        resumed_from=resumed_from,
    )
    torch.set_rng_state(ckpt["rng_cpu"])  # dropout masks continue as in an uninterrupted run
    if run.device.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"])
    logger.info("resuming from %s after epoch %d", path, resumed_from)
    return progress


def _train_epoch(run: _Training, config: TrainConfig, epoch: int, *, n_rows: int, show: bool) -> float:
    """One pass over the training rows in a (seed, epoch)-shuffled order; returns the mean training loss.

    Under DDP every rank draws the same global order and batches and trains on its slice of each batch
    (rows rank, rank + N, …): the global batch stays `batch_size`, every rank takes the same number of steps,
    and DDP's mean of the ranks' mean losses is one process's mean loss when the slices are equal.
    """
    run.model.train()
    step_model = run.ddp if run.ddp is not None else run.model
    # Shuffling from (seed, epoch) alone: a resumed run sees the same order as an uninterrupted one.
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    batches = _batch_rows(order.to(run.train_inputs.device), config.batch_size, min_rows=2 * run.world_size)
    if run.world_size > 1:
        batches = [rows[run.rank :: run.world_size] for rows in batches]
    n_batches = len(batches)
    # Batch losses stay on the device; reading each one back would sync the GPU every step.
    losses = torch.zeros(n_batches, device=run.device)
    sizes = torch.tensor([len(rows) for rows in batches], dtype=torch.float32, device=run.device)
    check_each_step = run.device.type == "cpu"  # no sync to save on the host: stop before the bad update
    checked = 0
    batch_bar = tqdm(
        _iterate_batches(run.train_inputs, run.y_batches, batches, num_workers=run.workers, pin=run.pin),
        total=n_batches,
        desc=f"epoch {epoch}",
        leave=False,
        disable=not show,
    )
    for b, parts in enumerate(batch_bar, start=1):
        parts = tuple(t.to(run.device, non_blocking=run.pin) for t in parts)
        losses[b - 1] = train_step(
            step_model,
            parts[:-1],
            parts[-1],
            loss_fn=run.loss_fn,
            optimizer=run.optimizer,
            scaler=run.scaler,
            autocast=run.autocast(),
            l1=config.l1,
            l1_params=run.l1_params,
            grad_clip=config.grad_clip,
            where=f"epoch {epoch}, batch {b}/{n_batches}",
            check_finite=check_each_step,
        )
        if isinstance(run.scheduler, torch.optim.lr_scheduler.LambdaLR):
            run.scheduler.step()
        if not check_each_step and (b - checked >= _FINITE_CHECK_EVERY or b == n_batches):
            raise_if_diverged(losses[checked:b], first_batch=checked + 1, epoch=epoch, n_batches=n_batches)
            checked = b
    total = (losses * sizes).sum()
    if run.world_size > 1:
        torch.distributed.all_reduce(total)  # every rank's share of the epoch's summed loss
    return float(total) / n_rows  # also waits for the GPU to finish


def _record_epoch(run: _Training, progress: _Progress, config: TrainConfig, record: dict[str, float]) -> None:
    """Append the epoch's metrics, step a plateau scheduler, keep the best weights and count epochs without gain."""
    epoch = int(record["epoch"])
    progress.history.append(record)
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.scheduler.step(record[config.monitor])
    if _improved(record[config.monitor], progress.best_metric, config.monitor_mode, config.min_delta):
        progress.best_metric, progress.best_epoch, progress.bad_epochs = record[config.monitor], epoch, 0
        progress.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
    else:
        progress.bad_epochs += 1
    progress.stopped_early = progress.bad_epochs >= config.patience and epoch < config.epochs


def _checkpoint(
    run: _Training, progress: _Progress, config: TrainConfig, epoch: int, fingerprint: str
) -> dict[str, Any]:
    """The checkpoint as one dict: model, optimiser, scheduler, scaler, loop state, config, data and RNG."""
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "epoch": epoch,
        "best_metric": progress.best_metric,
        "best_epoch": progress.best_epoch,
        "best_state": progress.best_state,
        "bad_epochs": progress.bad_epochs,
        "stopped_early": progress.stopped_early,
        "history": progress.history,
        "config": config.model_dump(mode="json"),
        "data_fingerprint": fingerprint,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if run.device.type == "cuda" else None,
    }


def _run_epochs(
    run: _Training,
    progress: _Progress,
    config: TrainConfig,
    *,
    n_rows: int,
    n_classes: int,
    checkpoint_path: Path | None,
    fingerprint: str,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> None:
    """The epoch loop: train, evaluate on val, keep the best, checkpoint, report, stop early."""
    show = _progress_enabled(config.progress) and run.is_main
    remaining = range(0) if progress.finished else range(progress.start_epoch, config.epochs + 1)
    epochs_bar = tqdm(remaining, desc="epochs", disable=not show, initial=progress.start_epoch - 1, total=config.epochs)
    for epoch in epochs_bar:
        started = time.perf_counter()
        train_loss = _train_epoch(run, config, epoch, n_rows=n_rows, show=show)
        train_seconds = time.perf_counter() - started
        lr = run.optimizer.param_groups[0]["lr"]
        metrics = _evaluate_on_main(run, config, n_classes)
        record = {
            "epoch": float(epoch),
            "train_loss": train_loss,
            **metrics,
            "lr": float(lr),
            "seconds": time.perf_counter() - started,
            "train_seconds": train_seconds,
        }
        _record_epoch(run, progress, config, record)
        epochs_bar.set_postfix(
            train_loss=f"{record['train_loss']:.4f}", **{config.monitor: f"{record[config.monitor]:.4f}"}
        )
        if checkpoint_path is not None and run.is_main:
            _save_checkpoint(checkpoint_path, _checkpoint(run, progress, config, epoch, fingerprint))
        if on_epoch is not None and run.is_main:
            on_epoch(epoch, dict(record))
        if progress.stopped_early:
            logger.info(
                "early stop after epoch %d: %s has not improved for %d epochs", epoch, config.monitor, config.patience
            )
            break
    epochs_bar.close()


def _evaluate_on_main(run: _Training, config: TrainConfig, n_classes: int) -> dict[str, float]:
    """Validation metrics: rank 0 evaluates every val row and sends the numbers to the other ranks.

    Every rank then keeps the same best epoch, steps a plateau scheduler alike and stops early together.
    """
    metrics: dict[str, float] | None = None
    if run.is_main:
        metrics = _evaluate(
            run.model,
            run.val_inputs,
            run.y_val,
            device=run.device,
            autocast=run.autocast(),
            batch_size=config.eval_batch_size,
            n_classes=n_classes,
        )
    if run.world_size > 1:
        box: list[dict[str, float] | None] = [metrics]
        torch.distributed.broadcast_object_list(box, src=0)
        metrics = box[0]
    assert metrics is not None
    return metrics


def train_model(
    train: pd.DataFrame,
    val: pd.DataFrame,
    *,
    label_col: str,
    classes: list[str],
    config: TrainConfig,
    text_col: str | None = None,
    feature_cols: list[str] | None = None,
    image_col: str | None = None,
    audio_col: str | None = None,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train with early stopping on `config.monitor`; return the best epoch's predictor and the history.

    Args:
        classes: class names in output order (labels in `label_col` must be among them).
        checkpoint_dir: where `last.pt` is written after every epoch; if it already holds one from the
            same config and data, training resumes after its epoch (or returns at once if it had finished).
        on_epoch: called after each epoch (and its checkpoint) with the epoch number (from 1) and its
            metrics. An exception raised there stops training; the checkpoint keeps the epoch. Under
            `config.distributed` it runs in rank 0's process, so it must be picklable (a module-level function).

    Raises:
        FloatingPointError: the loss diverged (NaN/inf), naming epoch and batch.
        ValueError: bad labels, columns, or a checkpoint from another config/data.
    """
    if config.distributed is not None:
        from tasks.distributed import train_distributed  # the DDP launch: torch.distributed only when asked

        return train_distributed(
            train,
            val,
            label_col=label_col,
            classes=classes,
            config=config,
            text_col=text_col,
            feature_cols=feature_cols,
            image_col=image_col,
            audio_col=audio_col,
            checkpoint_dir=checkpoint_dir,
            on_epoch=on_epoch,
        )
    _check_inputs(train, val, label_col=label_col, classes=classes)
    run = _set_up_training(
        train,
        val,
        label_col=label_col,
        classes=classes,
        config=config,
        text_col=text_col,
        feature_cols=feature_cols,
        image_col=image_col,
        audio_col=audio_col,
    )
    return _train_prepared(
        run, config, n_rows=len(train), n_classes=len(classes), checkpoint_dir=checkpoint_dir, on_epoch=on_epoch
    )


def _check_inputs(train: pd.DataFrame, val: pd.DataFrame, *, label_col: str, classes: list[str]) -> None:
    if len(classes) < 2:
        raise ValueError(f"classes {classes} must name at least two classes")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"train ({len(train)} rows) and val ({len(val)} rows) must both be non-empty")
    require_columns(train, [label_col])
    require_columns(val, [label_col])


def _train_prepared(
    run: _Training,
    config: TrainConfig,
    *,
    n_rows: int,
    n_classes: int,
    checkpoint_dir: Path | None,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    """Resume from `checkpoint_dir` when it holds a checkpoint of this run, run the epochs, and finish."""
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    fingerprint = _data_fingerprint(run) if checkpoint_path is not None else ""
    progress = _Progress()
    if checkpoint_path is not None and checkpoint_path.is_file():
        progress = _resume_from_checkpoint(checkpoint_path, run, config, fingerprint)
    _run_epochs(
        run,
        progress,
        config,
        n_rows=n_rows,
        n_classes=n_classes,
        checkpoint_path=checkpoint_path,
        fingerprint=fingerprint,
        on_epoch=on_epoch,
    )
    return _finish_training(run, progress, n_rows=n_rows, checkpoint_path=checkpoint_path)


def _finish_training(run: _Training, progress: _Progress, *, n_rows: int, checkpoint_path: Path | None) -> TrainResult:
    """The best epoch's weights back in the predictor (on the CPU), with the history and the run's facts."""
    model = run.model
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    model.eval()
    run.predictor.model = model.to("cpu")
    history = progress.history
    train_seconds_total = sum(h.get("train_seconds", 0.0) for h in history)
    return TrainResult(
        predictor=run.predictor,
        history=history,
        best_epoch=progress.best_epoch,
        best_metric=float(progress.best_metric) if progress.best_metric is not None else float("nan"),
        stopped_early=progress.stopped_early,
        device=str(run.device),
        precision=run.precision,
        resumed_from_epoch=progress.resumed_from,
        samples_per_second=n_rows * len(history) / train_seconds_total if train_seconds_total else 0.0,
        n_parameters=count_parameters(model),
        checkpoint_path=checkpoint_path,
    )


def _save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a half-written last.pt
