"""The audio modality's small CNN on log-mels against logistic regression on mean log-mel features, same run.

Data: the espeak-ng spoken-command demo (`tasks.demo_audio`, 8 words x 10 voices x 2 speeds x 2 pitches =
320 clips), split by voice with the pipeline's own group split (6 voices train, 2 val, 2 test), so the
test voices are never heard in training. Both models see the same 16 kHz clips, padded/cropped to 1 s:
- the CNN (`tasks.audio_models.build_audio_cnn`) on the (1, 40, 101) log-mel, trained with the
  pipeline's `train_step`, the epoch with the best validation accuracy kept;
- the baseline: scikit-learn's LogisticRegression on the 40 per-band means of the same log-mel, standardised.
Scored on the test voices with the pipeline's metric code (`tasks.train.classification_scores`).
Prints both and the ratio CNN / baseline (accuracy).

    .venv/bin/python bench/audio_baseline.py [--epochs 40] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.audio import load_audio_column, log_mel_batch  # noqa: E402
from tasks.audio_models import build_audio_cnn  # noqa: E402
from tasks.demo_audio import write_speech_commands  # noqa: E402
from tasks.split import assign_splits  # noqa: E402
from tasks.train import classification_scores, eval_step, set_seed, train_step  # noqa: E402

BATCH = 32


def load_demo(root: Path) -> tuple[pd.DataFrame, torch.Tensor]:
    """The demo's rows with their split, and the (rows, 1, mels, frames) log-mels."""
    csv = write_speech_commands(root)
    frame = pd.read_csv(csv)
    waveforms, reasons = load_audio_column(frame["audio"], base_dir=csv.parent)
    bad = [r for r in reasons if r is not None]
    if bad:
        raise SystemExit(f"{len(bad)} demo clips could not be read, e.g. {bad[0]}")
    frame["split"] = assign_splits(frame, strategy="group", seed=0, ratios=(0.6, 0.2, 0.2), group_col="voice")
    return frame, log_mel_batch([w for w in waveforms if w is not None])


def train_cnn(
    x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], *, n_classes: int, epochs: int, seed: int
) -> nn.Module:
    """Mini-batch Adam; the weights of the epoch with the best validation accuracy."""
    set_seed(seed)
    model = build_audio_cnn(n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    best, best_state = -1.0, copy.deepcopy(model.state_dict())
    for _ in range(epochs):
        model.train()
        for rows in torch.randperm(len(y["train"])).split(BATCH):
            train_step(
                model,
                (x["train"][rows],),
                y["train"][rows],
                loss_fn=nn.CrossEntropyLoss(),
                optimizer=optimizer,
                scaler=None,
                autocast=nullcontext(),
            )
        model.eval()
        accuracy = float((eval_step(model, (x["val"],), nullcontext()).argmax(1) == y["val"]).float().mean())
        if accuracy > best:
            best, best_state = accuracy, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval()


def _line(name: str, accuracy: float, f1: float, seconds: float) -> str:
    return f"  {name:<38} accuracy {accuracy:.3f}  f1_macro {f1:.3f}  ({seconds:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        frame, features = load_demo(Path(tmp))
    classes = sorted(frame["label"].unique())
    labels = torch.tensor([classes.index(w) for w in frame["label"]])
    parts = {s: torch.tensor((frame["split"] == s).to_numpy()) for s in ("train", "val", "test")}
    x = {s: features[m] for s, m in parts.items()}
    y = {s: labels[m] for s, m in parts.items()}
    voices = {s: sorted(frame.loc[frame["split"] == s, "voice"].unique()) for s in parts}
    elapsed = time.perf_counter() - started
    print(f"data: {len(frame)} clips, {len(classes)} words, synthesised + featurised in {elapsed:.1f} s")
    for s in parts:
        print(f"  {s}: {len(y[s])} clips, voices {', '.join(voices[s])}")

    # Baseline: per-band means over time of the same log-mel.
    means = {s: x[s][:, 0].mean(dim=2).numpy() for s in parts}
    t0 = time.perf_counter()
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    baseline.fit(means["train"], y["train"].numpy())
    base_acc, base_f1 = classification_scores(y["test"].numpy(), baseline.predict(means["test"]), len(classes))
    print(_line("logistic regression on mean log-mel", base_acc, base_f1, time.perf_counter() - t0))

    scores = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        model = train_cnn(x, y, n_classes=len(classes), epochs=args.epochs, seed=seed)
        pred = eval_step(model, (x["test"],), nullcontext()).argmax(1).numpy()
        acc, f1 = classification_scores(y["test"].numpy(), pred, len(classes))
        scores.append(acc)
        print(_line(f"cnn on log-mel, seed {seed}", acc, f1, time.perf_counter() - t0))
    mean_acc = float(np.mean(scores))
    print(
        f"  cnn mean accuracy over {len(scores)} seeds: {mean_acc:.3f} (min {min(scores):.3f}, max {max(scores):.3f})"
    )
    print(f"  ratio accuracy cnn / logistic regression: {mean_acc / base_acc:.2f}")
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
