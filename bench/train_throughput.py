"""Training throughput of `train_model` against a bare PyTorch loop, in the same process.

Same network, same encoded data, same batch size and optimiser; both time the training passes only
(no validation). The ratio `train_model / bare` is the cost of the toolbox's bookkeeping (loss
checks, progress, schedulers): the goal is >= 0.95. On CUDA it also measures the mixed-precision
speedup (bf16/fp16 autocast vs fp32) on a CNN big enough for the GPU to matter.

    python bench/train_throughput.py                 # text + tabular on the default device
    python bench/train_throughput.py --task tabular --rows 200000 --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from tasks.featurize import EncodedInputs  # noqa: E402
from tasks.models import ModelSpec, build_model  # noqa: E402
from tasks.train import TrainConfig, build_optimizer, choose_device, set_seed, train_model  # noqa: E402

CLASSES = ["a", "b"]


def make_text(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    lengths = rng.integers(8, 30, rows)
    texts = [" ".join(rng.choice(vocab, size=k)) for k in lengths]
    labels = np.where(rng.random(rows) < 0.5, "a", "b")
    return pd.DataFrame({"text": texts, "y": labels})


def make_tabular(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 20))
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(20)])
    df["y"] = np.where(x[:, :5].sum(1) > 0, "a", "b")
    return df


def make_images(rows: int, size: int = 32, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    images = list(rng.normal(size=(rows, size, size, 3)).astype(np.float32))
    return pd.DataFrame({"image": images, "y": np.where(rng.random(rows) < 0.5, "a", "b")})


def bare_loop(
    inputs: EncodedInputs,
    y: torch.Tensor,
    config: TrainConfig,
    spec: ModelSpec,
    device: torch.device,
    epochs: int,
) -> float:
    """Samples/s of the plainest loop over the same tensors: shuffle, slice, forward, backward, step."""
    set_seed(config.seed, config.deterministic)
    model = build_model(spec).to(device)
    optimizer = build_optimizer(model, config)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seconds = 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(y)).to(inputs.device)
        for batch in torch.split(order, config.batch_size):
            args = tuple(t.to(device, non_blocking=True) for t in inputs.take(batch))
            loss = loss_fn(model(*args), y[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
    return len(y) * epochs / seconds


def compare(name: str, df: pd.DataFrame, config: TrainConfig, columns: dict[str, object], repeats: int) -> float:
    """Print and return the median throughput ratio train_model / bare loop."""
    val = df.iloc[: max(2, len(df) // 50)]
    kwargs: dict[str, Any] = dict(label_col="y", classes=CLASSES, config=config, **columns)
    toolbox: list[float] = []
    bare: list[float] = []
    result = train_model(df, val, **kwargs)
    predictor = result.predictor
    device = choose_device(config.device)
    # The bare loop gets the data where train_model keeps it: dense tensors on the GPU, bags on the host.
    inputs = predictor.encode(df).to(device) if device.type == "cuda" else predictor.encode(df)
    y = torch.tensor([CLASSES.index(v) for v in df["y"]], device=inputs.device)
    for repeat in range(repeats + 1):  # the first round warms up allocators and thread pools
        # Alternate who goes first: clocks and caches favour whoever runs second less when both take turns.
        for who in ("toolbox", "bare") if repeat % 2 == 0 else ("bare", "toolbox"):
            if who == "toolbox":
                sps = train_model(df, val, **kwargs).samples_per_second
            else:
                sps = bare_loop(inputs, y, config, predictor.model_spec, device, config.epochs)
            if repeat:
                (toolbox if who == "toolbox" else bare).append(sps)
    ratio = statistics.median(toolbox) / statistics.median(bare)
    print(
        f"{name:8s} rows={len(df):7d} batch={config.batch_size:5d} precision={result.precision:4s} "
        f"train_model {statistics.median(toolbox):10.0f}/s  bare loop {statistics.median(bare):10.0f}/s  "
        f"ratio {ratio:.3f}  (per repeat {[round(t / b, 3) for t, b in zip(toolbox, bare, strict=True)]})"
    )
    return ratio


def mixed_precision_speedup(rows: int, repeats: int) -> None:
    df = make_images(rows)
    val = df.iloc[:64]
    base = TrainConfig(
        task="image",
        channels=[128, 256, 512],
        hidden=[256],
        batch_size=1024,
        epochs=2,
        patience=5,
        progress=False,
        device="cuda",
        deterministic=False,
    )
    speeds: dict[str, list[float]] = {"fp32": [], "auto": []}
    for repeat in range(repeats + 1):
        for precision in ("fp32", "auto"):
            config = base.model_copy(update={"precision": precision})
            result = train_model(df, val, label_col="y", classes=CLASSES, config=config, image_col="image")
            if repeat:
                speeds[precision].append(result.samples_per_second)
            label = result.precision
    fp32, mixed = statistics.median(speeds["fp32"]), statistics.median(speeds["auto"])
    print(
        f"cnn      rows={rows:7d} fp32 {fp32:10.0f}/s  {label} {mixed:10.0f}/s  mixed-precision speedup "
        f"{mixed / fp32:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["text", "tabular", "all"], default="all")
    parser.add_argument("--rows", type=int, default=0, help="rows per task (0: a size that fits the device)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    device = choose_device(args.device)
    torch_threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none"
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch_threads} torch threads, GPU {gpu}; "
        f"torch {torch.__version__}"
    )
    common = dict(epochs=args.epochs, patience=args.epochs + 1, progress=False, device=args.device, precision="fp32")
    if args.task in ("text", "all"):
        rows = args.rows or (100_000 if device.type == "cuda" else 8_000)
        compare(
            "text",
            make_text(rows),
            TrainConfig(task="text", batch_size=64, **common),
            {"text_col": "text"},
            args.repeats,
        )
    if args.task in ("tabular", "all"):
        rows = args.rows or (1_000_000 if device.type == "cuda" else 100_000)
        config = TrainConfig(task="tabular", hidden=[64, 64], batch_size=256, **common)
        compare(
            "tabular",
            make_tabular(rows),
            config,
            {"feature_cols": [f"f{i}" for i in range(20)]},
            args.repeats,
        )
    if device.type == "cuda":
        mixed_precision_speedup(args.rows or 20_000, args.repeats)


if __name__ == "__main__":
    main()
