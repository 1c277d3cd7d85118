"""Training throughput of `train.distributed` (DDP) against one process, on the same data and global batch.

Both runs go through `train_model`; samples/s counts the training passes only (no validation, no worker
start-up), and the wall time of the whole call (including spawning the workers) is printed beside it.
On CPU the ranks use gloo and share the machine's cores (each gets cores / N threads); with CUDA each rank
takes one GPU and uses NCCL.

    python bench/ddp_throughput.py                       # 2 processes, hashed-text model, on this machine
    python bench/ddp_throughput.py --nproc 4 --rows 50000 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from tasks.train import TrainConfig, TrainResult, train_model  # noqa: E402

CLASSES = ["a", "b"]


def make_text(rows: int, seed: int = 0) -> pd.DataFrame:
    """Random word bags whose label follows a few cue words: a learnable, hashed-text workload."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    texts, labels = [], []
    for _ in range(rows):
        words = list(rng.choice(vocab, size=int(rng.integers(8, 30))))
        label = CLASSES[int(rng.random() < 0.5)]
        words.append("good" if label == "a" else "bad")
        texts.append(" ".join(words))
        labels.append(label)
    return pd.DataFrame({"text": texts, "y": labels})


def run(train: pd.DataFrame, val: pd.DataFrame, config: TrainConfig) -> tuple[TrainResult, float]:
    started = time.perf_counter()
    result = train_model(train, val, label_col="y", classes=CLASSES, config=config, text_col="text")
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch, for both runs")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()

    train, val = make_text(args.rows, seed=0), make_text(max(args.rows // 10, 100), seed=1)
    base = {
        "task": "text",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "patience": args.epochs,
        "progress": False,
        "device": args.device,
        "precision": "fp32",
    }
    one, one_wall = run(train, val, TrainConfig(**base))
    many, many_wall = run(train, val, TrainConfig(**base, distributed={"nproc_per_node": args.nproc}))

    gpus = torch.cuda.get_device_name(0) if args.device == "cuda" else "none"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, GPU {gpus}")
    print(f"torch {torch.__version__}; {args.rows} rows x {args.epochs} epochs, global batch {args.batch_size}")
    print(f"1 process : {one.samples_per_second:10.0f} samples/s (call {one_wall:.1f} s)")
    print(f"{args.nproc} processes: {many.samples_per_second:10.0f} samples/s (call {many_wall:.1f} s)")
    print(f"ratio {args.nproc} / 1: {many.samples_per_second / one.samples_per_second:.2f}x")
    print(
        f"val_loss last epoch: 1 process {one.history[-1]['val_loss']:.4f}, {args.nproc} processes "
        f"{many.history[-1]['val_loss']:.4f}"
    )


if __name__ == "__main__":
    main()
