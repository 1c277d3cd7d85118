"""Bundled real data sets: what `sluice data write` writes, and what a config may name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sluice.cli import EXIT_BAD_INPUT, main
from sluice.config import ConfigError, parse_config
from tasks.demo_data import demo_dataset, mnist_arrays, write_demo_data, write_mnist_folder


def test_data_write_prints_where_the_file_went_and_the_init_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--home", str(tmp_path / ".sluice"), "data", "write", "seattle_weather", "--rows", "30"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / ".sluice" / "raw" / "seattle_weather" / "seattle_weather.csv"
    assert f"wrote {written.relative_to(tmp_path)}" in out and "(the first 30 rows)" in out
    assert f"sluice init {written.relative_to(tmp_path)} --name seattle_weather --label weather --time date" in out
    frame = pd.read_csv(written)
    assert len(frame) == 30 and frame["date"].iloc[0] == "2012-01-01"  # ISO dates, as a user's file has them


def test_unknown_data_set_is_named_with_the_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "data", "write", "iris"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "unknown demo dataset 'iris'" in err and "amazon_reviews" in err and "mnist_digits" in err
    raw = {"name": "x", "source": {"path": "a.csv"}, "labels": {"column": "y", "classes": ["a", "b"]}}
    with pytest.raises(ConfigError, match=r"demo.dataset: .*unknown demo dataset 'iris'"):
        parse_config(raw | {"registry": {"model_name": "m"}, "demo": {"dataset": "iris"}}, base_dir=tmp_path)


def test_mnist_rows_are_balanced_and_the_folder_is_stable(tmp_path: Path) -> None:
    images, digits = mnist_arrays(20)
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert digits.tolist() == list(range(10)) * 2  # the first N rows take each digit in turn

    csv = write_mnist_folder(tmp_path / "mnist.csv", rows=20)
    frame = pd.read_csv(csv)
    assert frame["digit"].tolist() == digits.tolist()
    assert all(Path(p).is_file() and Path(p).is_absolute() for p in frame["image"])
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "images").iterdir()} | {csv: csv.stat().st_mtime_ns}
    write_mnist_folder(tmp_path / "mnist.csv", rows=20)  # unchanged bytes are not rewritten
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (run `make audio`)")
def test_speech_commands_are_written_as_wav_files_named_by_absolute_path(tmp_path: Path) -> None:
    csv = write_demo_data("speech_commands", tmp_path / "raw" / "speech_commands" / "speech_commands.csv", rows=3)
    frame = pd.read_csv(csv)
    assert list(frame.columns[:3]) == ["audio", "label", "voice"] and len(frame) == 3
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["audio"])
    spec = demo_dataset("speech_commands")
    assert spec.roles == {"label": "label", "audio": "audio", "group": "voice"}
    assert spec.init_command(csv) == "sluice run --config configs/speech_commands.yaml"  # init drafts no audio
