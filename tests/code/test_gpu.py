"""CUDA paths: training on the GPU, mixed precision (bf16, fp16 + GradScaler), pinned memory and workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.predictor import Predictor
from tasks.train import TrainConfig, choose_precision, train_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none on this machine"),
]
CLASSES = ["neg", "pos"]


def _reviews(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    filler = "the a movie film plot actor scene story it was".split()
    cues = {"pos": "great wonderful superb".split(), "neg": "awful boring dull".split()}
    rows = []
    for i in range(n):
        label = CLASSES[i % 2]
        words = [*rng.choice(filler, size=6), rng.choice(cues[label])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def _images(n: int, seed: int) -> pd.DataFrame:
    """Bright top half vs bright bottom half, with noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        img = rng.normal(0, 0.3, size=(12, 12))
        if i % 2:
            img[:6] += 1.0
        else:
            img[6:] += 1.0
        images.append(img)
        labels.append(CLASSES[i % 2])
    return pd.DataFrame({"image": images, "label": labels})


def _config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = dict(
        n_buckets=2**12,
        embed_dim=16,
        hidden=[32],
        epochs=4,
        batch_size=32,
        lr=1e-2,
        patience=4,
        progress=False,
        device="cuda",
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_auto_device_trains_on_cuda_with_mixed_precision() -> None:
    train, val = _reviews(400, 0), _reviews(100, 1)
    result = train_model(train, val, label_col="label", classes=CLASSES, config=_config(device="auto"), text_col="text")
    assert result.device.startswith("cuda")
    assert result.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert result.best["val_accuracy"] >= 0.9
    # The returned predictor serves on CPU; it can also be moved back to the GPU.
    cpu = result.predictor.predict_proba(val)
    gpu = result.predictor.to("cuda").predict_proba(val)
    np.testing.assert_allclose(cpu, gpu, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_learns_on_cuda(precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    train, val = _images(256, 0), _images(64, 1)
    result = train_model(
        train,
        val,
        label_col="label",
        classes=CLASSES,
        image_col="image",
        config=_config(task="image", channels=[8, 16], precision=precision, lr=3e-3),
    )
    assert result.precision == precision
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best["val_accuracy"] >= 0.9


def test_fp16_checkpoint_carries_the_grad_scaler(tmp_path: Path) -> None:
    train, val = _reviews(200, 0), _reviews(50, 1)
    train_model(
        train,
        val,
        label_col="label",
        classes=CLASSES,
        text_col="text",
        config=_config(precision="fp16", epochs=1),
        checkpoint_dir=tmp_path,
    )
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert checkpoint["scaler"] is not None and checkpoint["scaler"]["scale"] > 0
    assert choose_precision(torch.device("cuda"), "fp16") == ("fp16", torch.float16)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_pinned_memory_path_trains_the_same(num_workers: int) -> None:
    train, val = _reviews(300, 0), _reviews(100, 1)
    config = _config(precision="fp32", epochs=2, deterministic=True)
    pinned = train_model(
        train,
        val,
        label_col="label",
        classes=CLASSES,
        text_col="text",
        config=config.model_copy(update={"pin_memory": True, "num_workers": num_workers}),
    )
    plain = train_model(
        train,
        val,
        label_col="label",
        classes=CLASSES,
        text_col="text",
        config=config.model_copy(update={"pin_memory": False}),
    )
    assert pinned.best["val_accuracy"] >= 0.9
    # Same batches and seed: pinning changes the copy, not the numbers (EmbeddingBag's CUDA backward is
    # not bitwise deterministic, hence the tolerance).
    assert pinned.history[-1]["val_loss"] == pytest.approx(plain.history[-1]["val_loss"], rel=1e-3, abs=1e-4)


def test_gpu_trained_predictor_loads_on_cpu(tmp_path: Path) -> None:
    train, val = _reviews(200, 0), _reviews(50, 1)
    result = train_model(train, val, label_col="label", classes=CLASSES, text_col="text", config=_config(epochs=2))
    result.predictor.save(tmp_path)
    loaded = Predictor.load(tmp_path, device="cpu")
    assert next(loaded.model.parameters()).device.type == "cpu"
    np.testing.assert_allclose(loaded.predict_proba(val), result.predictor.predict_proba(val), rtol=1e-5)
