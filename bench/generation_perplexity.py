"""Test perplexity of a causal LM on Rotten Tomatoes snippets before and after fine-tuning, in one run.

The snippets are the fresh/rotten reviews of `tasks.demo_data.rotten_tomatoes_frame()` (plot summaries
left out), split by movie with GroupShuffleSplit (no movie in two splits). The baseline is the same
model before fine-tuning, scored on the same test texts: the ratio after / before is the figure. For
`tiny` the "before" model is untrained (about uniform over its vocabulary), so the ratio mostly says the
loop learns; for `smollm2` it is the pretrained SmolLM2-135M-Instruct, so it says what fine-tuning adds.

    python bench/generation_perplexity.py                        # the tiny GPT-2, 3 epochs on 600 snippets
    python bench/generation_perplexity.py --model smollm2 --rows 300 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from tasks.demo_data import rotten_tomatoes_frame  # noqa: E402
from tasks.generation import (  # noqa: E402
    GenerationConfig,
    fine_tune_lm,
    generate_texts,
    measure_perplexity,
    prepare_lm,
)

PROMPTS = ["This movie", "The acting is", "A film that"]
# A pretrained model only needs nudging; the tiny one learns from scratch.
DEFAULT_LR = {"tiny": 1e-3, "smollm2": 5e-5}


def split_snippets(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """train / val / test snippets, grouped by movie: 70 / 10 / 20 % of the movies, about."""
    frame = rotten_tomatoes_frame()
    frame = frame[frame["category"].isin(["fresh", "rotten"])].sample(n=rows, random_state=seed)
    groups = frame["movie_name"]
    rest_index, test_index = next(
        GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed).split(frame, groups=groups)
    )
    rest, test = frame.iloc[rest_index], frame.iloc[test_index]
    splitter = GroupShuffleSplit(n_splits=1, test_size=0.125, random_state=seed)
    train_index, val_index = next(splitter.split(rest, groups=rest["movie_name"]))
    train, val = rest.iloc[train_index], rest.iloc[val_index]
    assert not set(train["movie_name"]) & set(test["movie_name"])  # the point of a group split
    return train, val, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | smollm2 | a local model directory")
    parser.add_argument("--rows", type=int, default=600, help="fresh/rotten snippets drawn (seeded)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 for tiny, 5e-5 otherwise")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8, help="for the samples; 0 is greedy")
    parser.add_argument("--seed", type=int, default=0)
    # On a shared 2-core machine two intra-op threads fight the other processes: a tiny GPT-2 step took
    # ~5 s with 2 threads and ~0.4 s with 1 at a load average of 10 (measured here).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = GenerationConfig(
        model=args.model,
        tiny_layers=4,
        tiny_heads=4,
        tiny_embd=128,
        tiny_vocab_size=1024,
        epochs=args.epochs,
        lr=args.lr or DEFAULT_LR.get(args.model, 5e-5),
        batch_size=args.batch_size,
        block_size=args.block_size,
        max_new_tokens=24,
        temperature=args.temperature,
        seed=args.seed,
    )
    train, val, test = split_snippets(args.rows, args.seed)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs ({args.threads} torch threads), "
        f"torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}; {len(train)} train / {len(val)} val / {len(test)} test snippets, "
        f"{train['movie_name'].nunique()} / {val['movie_name'].nunique()} / {test['movie_name'].nunique()} movies"
    )
    start = time.perf_counter()
    lm = prepare_lm(config, train)
    parameters = sum(p.numel() for p in lm.model.parameters())
    print(
        f"model {args.model}: {parameters / 1e6:.2f}M parameters on {lm.device}, "
        f"loaded in {time.perf_counter() - start:.1f} s"
    )

    before = measure_perplexity(lm, test, config)
    start = time.perf_counter()
    result = fine_tune_lm(lm, train, val, config)
    seconds = time.perf_counter() - start
    after = measure_perplexity(lm, test, config)
    for row in result.history:
        print(
            f"  epoch {row['epoch']:.0f}: train loss {row['train_loss']:.3f}, "
            f"val perplexity {row['val_perplexity']:.2f}"
        )
    print(f"test perplexity before {before:.2f}, after {after:.2f}: ratio after/before {after / before:.3f}")
    print(
        f"fine-tuning {seconds:.1f} s ({config.epochs} epochs, lr {config.lr:g}); load average {os.getloadavg()[0]:.1f}"
    )
    for prompt, continuation in zip(PROMPTS, generate_texts(lm, PROMPTS, config), strict=True):
        print(f"  {prompt!r} -> {continuation!r}")


if __name__ == "__main__":
    main()
