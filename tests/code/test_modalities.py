"""The modality registry and the text, tabular, image and audio modules: roles, encoders, duplicate keys, LS data."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

import tasks.modalities as modalities
from sluice.config import ColumnsConfig
from tasks.modalities import (
    DuplicateSettings,
    Modality,
    Role,
    all_role_columns,
    get_modality,
    modality_names,
    modality_of_architecture,
    register_modality,
    resolve_architecture,
)
from tasks.models import ModelSpec
from tasks.predictor import Predictor
from tasks.train import TrainConfig, _make_predictor


def _frames() -> dict[str, tuple[pd.DataFrame, dict[str, Any]]]:
    rng = np.random.default_rng(0)
    images = [rng.random((6, 6)).astype(np.float32) for _ in range(4)]
    return {
        "text": (
            pd.DataFrame({"body": ["A good film!", "a good film", "bad", "dull and slow"]}),
            {"text_col": "body"},
        ),
        "tabular": (
            pd.DataFrame({"x": [1.0, 1.0, 3.0, 4.0], "kind": ["a", "a", "b", "c"]}),
            {"feature_cols": ["x", "kind"]},
        ),
        "image": (
            pd.DataFrame({"pixels": [images[0], images[0].copy(), images[2], images[3]]}),
            {"image_col": "pixels"},
        ),
    }


def _wav(path: Path, freq: float, *, seconds: float = 0.5, rate: int = 16_000) -> str:
    t = np.arange(round(seconds * rate)) / rate
    samples = np.round(0.5 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t)) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return str(path)


def _audio_frame(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Four clips: a tone, a byte copy of it, and two other tones (a chirp-free sine each)."""
    first = _wav(folder / "a.wav", 440.0)
    copy = str(shutil.copy(first, folder / "a_copy.wav"))
    paths = [first, copy, _wav(folder / "b.wav", 1500.0), _wav(folder / "c.wav", 3000.0, seconds=0.8)]
    return pd.DataFrame({"clip": paths}), {"audio_col": "clip"}


def _frame(name: str, folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    return _audio_frame(folder) if name == "audio" else _frames()[name]


def test_registry_holds_the_built_in_modalities_in_order() -> None:
    assert modality_names()[:4] == ["text", "tabular", "image", "audio"]
    assert modality_of_architecture("audio_cnn").name == "audio"
    assert get_modality("tabular").architectures == ("mlp",)
    assert modality_of_architecture("transformer").name == "text"
    assert resolve_architecture("text", "auto") == "hashed_bag"


def test_unknown_modality_names_the_field_and_the_registered_names() -> None:
    with pytest.raises(ValueError, match=r"train\.task is 'video'.*'text', 'tabular', 'image', 'audio'"):
        get_modality("video")
    with pytest.raises(ValueError, match=r"train\.task"):
        TrainConfig(task="video")


def test_unknown_architecture_lists_every_registered_one() -> None:
    with pytest.raises(ValueError, match=r"cnn.*hashed_bag.*mlp.*transformer"):
        modality_of_architecture("rnn")


def test_a_registered_modality_is_found_and_a_taken_name_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the registry, so that the toy modalities are gone for the other tests.
    monkeypatch.setattr(modalities, "_REGISTRY", {m.name: m for m in modalities.registered_modalities()})

    class Toy(Modality):
        name: ClassVar[str] = "toy-test"
        roles: ClassVar[tuple[Role, ...]] = (Role("text", "text_col", "the toy column"),)
        architectures: ClassVar[tuple[str, ...]] = ("toy_net",)

    toy = register_modality(Toy(), replace=True)
    assert get_modality("toy-test") is toy
    assert resolve_architecture("toy-test", "auto") == "toy_net"
    with pytest.raises(ValueError, match="already registered"):
        register_modality(Toy())

    class Thief(Modality):
        name: ClassVar[str] = "thief-test"
        roles: ClassVar[tuple[Role, ...]] = ()
        architectures: ClassVar[tuple[str, ...]] = ("mlp",)

    with pytest.raises(ValueError, match="'tabular' already has"):
        register_modality(Thief())


def test_role_columns_come_from_the_columns_section() -> None:
    columns = ColumnsConfig(text="body", image="pixels", features=["x"], audio="clip")
    assert all_role_columns(columns) == {
        "text_col": "body",
        "feature_cols": ["x"],
        "image_col": "pixels",
        "audio_col": "clip",
    }
    assert all_role_columns(ColumnsConfig())["feature_cols"] is None


@pytest.mark.parametrize(
    ("name", "missing"),
    [("text", "text_col"), ("tabular", "feature_cols"), ("image", "image_col"), ("audio", "audio_col")],
)
def test_a_missing_role_is_named(name: str, missing: str) -> None:
    with pytest.raises(ValueError, match=f"task='{name}' needs {missing}"):
        get_modality(name).check_columns({})


@pytest.mark.parametrize("name", ["text", "tabular", "image", "audio"])
def test_encoder_round_trip_through_a_saved_predictor(name: str, tmp_path: Path) -> None:
    frame, columns = _frame(name, tmp_path)
    frame = frame.assign(label=["pos", "pos", "neg", "neg"])
    config = TrainConfig(task=name, n_buckets=64, hidden=[4], channels=[2], eval_batch_size=2)
    roles = {"text_col": None, "feature_cols": None, "image_col": None, "audio_col": None}
    predictor = _make_predictor(frame, config, ["neg", "pos"], **{**roles, **columns})
    modality = get_modality(name)
    assert predictor.input_columns == modality.input_columns(columns)
    predictor.save(tmp_path / "saved")
    loaded = Predictor.load(tmp_path / "saved")
    assert loaded.columns == predictor.columns
    assert loaded.features == json.loads(json.dumps(predictor.features))  # the saved form is JSON
    np.testing.assert_allclose(loaded.predict_proba(frame), predictor.predict_proba(frame), rtol=1e-6)
    assert (
        len(
            modality.encode(
                frame, architecture=loaded.architecture, features=loaded.features, columns=columns, tokenizer=None
            )
        )
        == 4
    )


def test_encoder_fills_in_the_data_dependent_spec_fields() -> None:
    frame, columns = _frames()["tabular"]
    spec = ModelSpec(architecture="mlp", n_classes=2)
    encoder = get_modality("tabular").fit_encoder(frame, TrainConfig(task="tabular"), spec, columns)
    assert spec.n_features == 1 + 3  # x, plus one-hot a/b/c
    assert set(encoder.features) == {"tabular"}


@pytest.mark.parametrize("name", ["text", "tabular", "image", "audio"])
def test_duplicate_key_is_equal_for_the_copied_rows_only(name: str, tmp_path: Path) -> None:
    frame, columns = _frame(name, tmp_path)
    keys = get_modality(name).duplicate_keys(frame, columns, DuplicateSettings())
    assert keys[0] == keys[1]  # a copy (text: equal after normalisation)
    assert len({keys[0], keys[2], keys[3]}) == 3


def test_text_duplicate_edges_follow_the_near_duplicate_mode() -> None:
    frame = pd.DataFrame({"t": ["the quick brown fox jumps", "the quick brown fox jumps!", "something else"]})
    text = get_modality("text")
    exact = text.duplicate_edges(frame, {"text_col": "t"}, DuplicateSettings(near_duplicates="none"))
    assert exact.tolist() == [[0, 1]]
    near = text.duplicate_edges(frame, {"text_col": "t"}, DuplicateSettings(near_duplicates="minhash"))
    assert near.tolist() == [[0, 1]]


def test_text_leakage_checks_find_a_text_in_two_splits() -> None:
    frame = pd.DataFrame({"t": ["same words here", "Same words here!", "other"]})
    split = np.array(["train", "test", "val"], dtype=object)
    checks = get_modality("text").leakage_checks(frame, split, {"text_col": "t"}, near_threshold=0.8)
    assert [c.name for c in checks] == ["exact_duplicates", "near_duplicates"]
    assert not checks[0].passed
    skipped = get_modality("text").leakage_checks(frame, split, {}, near_threshold=0.8)
    assert all(c.skipped for c in skipped)
    assert get_modality("image").leakage_checks(frame, split, {}, near_threshold=0.8) == []


def test_label_studio_tag_and_task_data() -> None:
    text, image, tabular = get_modality("text"), get_modality("image"), get_modality("tabular")
    assert (text.label_studio_tag, image.label_studio_tag, tabular.label_studio_tag) == ("Text", "Image", None)
    assert text.task_data("a review") == "a review"
    assert text.annotation_column({"text_col": "body"}) == "body"
    assert image.task_data(Path("/data/cat.png")) == "/data/cat.png"
    with pytest.raises(ValueError, match="path or URL"):
        image.task_data(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="cannot be annotated"):
        tabular.annotation_column({"feature_cols": ["x"]})
    with pytest.raises(ValueError, match=r"columns\.text"):
        text.annotation_column({})


def test_predictor_json_keeps_its_keys(tmp_path: Path) -> None:
    """Saved predictors read by older code (and the MLflow signature) see the same spec as before modalities."""
    frame, columns = _frames()["tabular"]
    frame = frame.assign(label=["pos", "pos", "neg", "neg"])
    predictor = _make_predictor(
        frame,
        TrainConfig(task="tabular", hidden=[4]),
        ["neg", "pos"],
        text_col=None,
        image_col=None,
        audio_col=None,
        **columns,
    )
    predictor.save(tmp_path)
    spec = json.loads((tmp_path / "predictor.json").read_text())
    assert list(spec) == [
        "format_version",
        "task",
        "classes",
        "text_col",
        "feature_cols",
        "image_col",
        "audio_col",
        "features",
        "model",
        "batch_size",
        "torch_version",
    ]
    assert (spec["text_col"], spec["feature_cols"], spec["image_col"]) == (None, ["x", "kind"], None)
    assert spec["audio_col"] is None  # a role added later: older predictor.json files load without it


def test_unreadable_audio_files_get_a_reason_and_the_rest_none(tmp_path: Path) -> None:
    frame, columns = _audio_frame(tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    frame = pd.concat([frame, pd.DataFrame({"clip": [str(tmp_path / "broken.wav"), str(tmp_path / "gone.wav")]})])
    reasons = get_modality("audio").unusable_items(frame.reset_index(drop=True), columns)
    assert reasons[:4] == [None] * 4
    assert "broken.wav" in str(reasons[4]) and "not a readable PCM WAV" in str(reasons[4])
    assert "gone.wav" in str(reasons[5]) and "does not exist" in str(reasons[5])
    assert get_modality("text").unusable_items(frame, {}) == [None] * 6  # other kinds of data: all usable


def test_audio_duplicate_edges_join_copies_only(tmp_path: Path) -> None:
    frame, columns = _audio_frame(tmp_path)
    edges = get_modality("audio").duplicate_edges(frame, columns, DuplicateSettings())
    assert edges.tolist() == [[0, 1]]


def test_audio_label_studio_tag_and_task_data(tmp_path: Path) -> None:
    audio = get_modality("audio")
    assert audio.label_studio_tag == "Audio"
    assert audio.task_data(Path("/data/yes.wav")) == "/data/yes.wav"
    assert audio.annotation_column({"audio_col": "clip"}) == "clip"
    with pytest.raises(ValueError, match="WAV file paths"):
        audio.task_data(np.zeros(3))
