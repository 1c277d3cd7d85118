"""Spoken commands through the whole pipeline: espeak-ng WAV files, a corrupt file quarantined, split by voice."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sluice.home import Home
from tasks.demo_audio import write_speech_commands

pytestmark = [
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (run `make audio`)"),
]

WORDS = ("yes", "no", "up", "down")
# Voices whose clips differ: on Debian's espeak-ng, en-gb, en-gb+f4 and en-gb+klatt write byte-identical
# files (the variant is ignored), which the split would rightly treat as copies across groups.
VOICES = ("en-us", "en-gb-scotland", "en-029", "en-us+f2", "en-us+f3", "en-gb-x-rp")


def _speech_csv(folder: Path) -> tuple[Path, str]:
    """The demo set (4 words x 6 voices x 2 pitches, one speed) plus one row naming a corrupt WAV file."""
    csv = write_speech_commands(folder, words=WORDS, voices=VOICES, speeds=(175,), absolute_paths=True)
    broken = folder / "wav" / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot audio at all")
    frame = pd.read_csv(csv)
    bad = {"audio": str(broken), "label": "yes", "voice": "en-us", "speed": 175, "pitch": 50}
    pd.concat([frame, pd.DataFrame([bad])], ignore_index=True).to_csv(csv, index=False)
    return csv, str(broken)


def test_speech_commands_train_split_by_voice_and_quarantine_a_corrupt_file(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, tmp_path: Path
) -> None:
    from flows.pipeline import pipeline

    csv, broken = _speech_csv(tmp_path / "raw")
    config = make_config(
        "speech_commands",
        demo=None,
        source__path=str(csv),
        labels__classes=sorted(WORDS),
        train__channels=[8, 16],
        train__epochs=15,
        train__patience=15,
        train__batch_size=8,
        registry__model_name="speech-test",
        registry__promotion={"floors": {"accuracy": 0.0}},
    )
    result = pipeline(config_path=str(config), home=str(home.root))

    rows = result["rows"]
    assert rows["rows_in"] == len(WORDS) * len(VOICES) * 2 + 1
    assert rows["rows_in"] == rows["trainable"] + rows["awaiting"] + rows["quarantined_total"]
    assert all(suite["success"] for suite in result["expectations"]), result["expectations"]
    # the corrupt file is in quarantine with its reason; the run went on without it
    quarantine = pd.read_parquet(result["quarantine_path"])
    audio = quarantine[quarantine["step"] == "audio"]
    assert len(audio) == 1 and broken in audio["reason"].iloc[0]
    assert "not a readable PCM WAV" in audio["reason"].iloc[0]

    # no voice straddles splits
    data = pd.read_parquet(home.snapshots / result["snapshot_id"] / "data.parquet")
    manifest = pd.read_parquet(home.splits / f"{result['split_manifest_hash'][:16]}.parquet")
    splits = data.merge(manifest[["item_id", "split"]], on="item_id")
    assert splits.groupby("voice")["split"].nunique().max() == 1
    assert set(splits["split"]) == {"train", "val", "test"} and broken not in set(splits["audio"])
    assert result["test_metrics"]["accuracy"] > 0.25  # four words: chance is 0.25 (0.71 when written)

    # a version is registered with its model card, and serves raw rows named by path
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version("speech-test", result["model_version"])
    assert version.tags["sluice.snapshot_id"] == result["snapshot_id"]
    assert "model card" in version.description
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "reports")}
    assert {"reports/model_card.md", "reports/leakage_report.json"} <= artifacts
    model = mlflow.pyfunc.load_model(f"models:/speech-test/{result['model_version']}")
    clips = splits[splits["split"] == "test"]["audio"].head(3).tolist()
    predicted = model.predict(pd.DataFrame({"audio": clips}))
    assert set(predicted["label"]) <= set(WORDS) and len(predicted) == 3
