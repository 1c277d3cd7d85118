"""Audio modality: WAV reading and its errors, log-mel features, fingerprints, the two models, the espeak demo."""

from __future__ import annotations

import math
import shutil
import wave
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tasks.audio import (
    SAMPLE_RATE,
    AudioFileError,
    find_audio_duplicates,
    fingerprint_audio,
    fix_duration,
    load_audio,
    load_audio_column,
    log_mel_batch,
)
from tasks.audio_models import Wav2Vec2Classifier, build_audio_cnn, build_wav2vec2, save_wav2vec2
from tasks.demo_audio import VOICES, WORDS, write_speech_commands
from tasks.demo_data import DemoDataError
from tasks.label_config import load_label_config
from tasks.split import assign_splits
from tasks.train import set_seed, train_step

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (run `make audio`)"
)


def _write_wav(path: Path, samples: np.ndarray, rate: int, *, width: int = 2, channels: int = 1) -> Path:
    """PCM WAV of float samples in [-1, 1] (frames x channels, or 1-D for mono)."""
    frames = samples.reshape(len(samples), -1) if samples.ndim > 1 else samples[:, None]
    scale = 2 ** (8 * width - 1) - 1
    ints = np.round(frames * scale).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints.ravel())
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(raw)
    return path


def _sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def _expected_band(freq: float, n_mels: int = 40, f_min: float = 20.0) -> int:
    """The mel band whose centre is nearest `freq`, from the HTK formula (Young et al., The HTK Book)."""

    def mel(hz: float) -> float:
        return 2595 * math.log10(1 + hz / 700)

    step = (mel(SAMPLE_RATE / 2) - mel(f_min)) / (n_mels + 1)
    return round((mel(freq) - mel(f_min)) / step) - 1


# -- features ------------------------------------------------------------------
@pytest.mark.parametrize("freq", [300.0, 1000.0, 4000.0])
def test_log_mel_energy_peaks_in_the_band_of_the_sine(freq: float) -> None:
    features = log_mel_batch([torch.from_numpy(_sine(freq, 1.0, SAMPLE_RATE)).float()])
    assert features.shape == (1, 1, 40, 101)  # 1 s at a 10 ms hop, centred frames: 100 + 1
    band = int(features[0, 0].mean(dim=1).argmax())
    assert band == _expected_band(freq)


def test_log_mel_turns_gain_into_an_offset_and_fixes_the_duration() -> None:
    quiet = torch.from_numpy(_sine(1000.0, 0.4, SAMPLE_RATE, amplitude=0.05)).float()
    long_loud = torch.from_numpy(_sine(1000.0, 1.7, SAMPLE_RATE, amplitude=0.5)).float()
    short, long = log_mel_batch([quiet, long_loud])[:, 0]
    assert short.shape == long.shape == (40, 101)
    band = _expected_band(1000.0)
    # 10x the amplitude is 100x the power: log(100) = 4.6 nats more in the sine's band (frames inside the clip).
    assert float((long[band, 5:35] - short[band, 5:35]).mean()) == pytest.approx(math.log(100), abs=0.05)
    # The short clip is padded with silence: its last frames sit at the log floor.
    assert float(short[band, 60:].max()) < float(short[band, 5:35].min()) - 10


def test_a_22khz_stereo_wav_is_read_as_16khz_mono(tmp_path: Path) -> None:
    left = _sine(1000.0, 0.5, 22_050)
    path = _write_wav(tmp_path / "stereo.wav", np.stack([left, left], axis=1), 22_050, channels=2)
    waveform = load_audio(path)
    assert waveform.shape == (8000,)
    assert int(log_mel_batch([waveform])[0, 0, :, 10:40].mean(dim=1).argmax()) == _expected_band(1000.0)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_every_pcm_sample_width_reads_to_the_same_amplitude(tmp_path: Path, width: int) -> None:
    path = _write_wav(
        tmp_path / f"w{width}.wav", _sine(440.0, 0.1, SAMPLE_RATE, amplitude=0.5), SAMPLE_RATE, width=width
    )
    assert float(load_audio(path).abs().max()) == pytest.approx(0.5, abs=0.01)


# -- bad files -----------------------------------------------------------------
def _header_only(path: Path) -> None:
    _write_wav(path, np.zeros(0), SAMPLE_RATE)


@pytest.mark.parametrize(
    ("make", "fix"),
    [
        (None, "fix the path"),
        (lambda p: p.write_bytes(b""), "PCM WAV"),
        (lambda p: p.write_text("not audio at all, just text"), "PCM WAV"),
        (_header_only, "no samples"),
        # A RIFF header whose chunk claims more bytes than follow: the stdlib raises a bare RuntimeError.
        (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEnot audio at all"), "PCM WAV.*chunk runs past"),
    ],
    ids=["missing", "zero-bytes", "not-wav", "no-samples", "truncated-chunk"],
)
def test_a_bad_file_raises_bad_audio_naming_the_file_and_the_fix(tmp_path: Path, make: object, fix: str) -> None:
    path = tmp_path / "clip.wav"
    if callable(make):
        make(path)
    with pytest.raises(AudioFileError, match=fix) as info:
        load_audio(path)
    assert str(path) in str(info.value)


def test_a_file_cut_off_mid_sample_still_reads_its_whole_samples(tmp_path: Path) -> None:
    path = _write_wav(tmp_path / "cut.wav", _sine(440.0, 0.1, SAMPLE_RATE), SAMPLE_RATE)
    path.write_bytes(path.read_bytes()[:-1])  # a download or copy that stopped one byte short
    assert load_audio(path).shape == (1599,)


def test_an_audio_column_gives_a_reason_per_bad_row_and_reads_the_rest(tmp_path: Path) -> None:
    _write_wav(tmp_path / "good.wav", _sine(440.0, 0.2, SAMPLE_RATE), SAMPLE_RATE)
    (tmp_path / "bad.wav").write_text("oops")
    column = pd.Series(["good.wav", "bad.wav", None, "gone.wav"])
    waveforms, reasons = load_audio_column(column, base_dir=tmp_path)
    assert waveforms[0] is not None and reasons[0] is None
    assert waveforms[1] is None and "bad.wav" in str(reasons[1]) and "PCM WAV" in str(reasons[1])
    assert waveforms[2] is None and "no file named" in str(reasons[2])
    assert waveforms[3] is None and "gone.wav" in str(reasons[3])


# -- espeak words (shared by the fingerprint and model tests) -----------------
@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """4 words x 2 voices x 2 speeds, read back as 16 kHz waveforms (column `waveform`)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (run `make audio`)")
    root = tmp_path_factory.mktemp("speech")
    csv = write_speech_commands(
        root, words=("yes", "no", "up", "stop"), voices=("en-us", "en-gb+f4"), speeds=(130, 175), pitches=(50,)
    )
    frame = pd.read_csv(csv)
    frame["waveform"] = [load_audio(root / p) for p in frame["audio"]]
    return frame


def test_fingerprints_match_copies_gain_changes_and_offsets_but_not_other_words(
    spoken: pd.DataFrame, tmp_path: Path
) -> None:
    one_voice = spoken[(spoken["voice"] == "en-us") & (spoken["speed"] == 175)].reset_index(drop=True)
    original = one_voice.loc[one_voice["label"] == "yes", "waveform"].iloc[0]
    # Re-encoded at a third and at twice the gain (16-bit again), and shifted by 20 ms of silence.
    quiet = load_audio(_write_wav(tmp_path / "quiet.wav", original.numpy() / 3, SAMPLE_RATE))
    loud = load_audio(_write_wav(tmp_path / "loud.wav", np.clip(original.numpy() * 2, -1, 1), SAMPLE_RATE))
    shifted = torch.cat([torch.zeros(320), original])
    words = list(one_voice["waveform"])
    n = len(words)
    pairs = find_audio_duplicates([*words, original.clone(), quiet, loud, shifted])
    yes = int(one_voice.index[one_voice["label"] == "yes"][0])
    assert {(yes, n + k) for k in range(4)} <= set(pairs)
    assert [(i, j) for i, j in pairs if j < n] == []  # no two different words match
    assert fingerprint_audio(original) == fingerprint_audio(original * 0.5)


@pytest.mark.parametrize("clip", [torch.zeros(100), torch.linspace(-0.5, 0.5, 100)], ids=["silent", "tone"])
def test_a_clip_shorter_than_one_frame_still_gets_a_fingerprint(clip: torch.Tensor) -> None:
    # Near-duplicate keys are computed for every row: a 6 ms clip must not stop the stage.
    assert 0 <= fingerprint_audio(clip) < 2**64


# -- models --------------------------------------------------------------------
@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train on one intra-op thread: the suite runs three test processes on two cores, and torch's
    threads then wait on each other at every op (the Wav2Vec2 test took 70 s on two threads, 7 s on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_losses(model: nn.Module, inputs: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Full-batch steps of the pipeline's own `train_step` (Adam, gradients clipped at 1)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    return [
        float(
            train_step(
                model,
                (inputs,),
                y,
                loss_fn=nn.CrossEntropyLoss(),
                optimizer=optimizer,
                scaler=None,
                autocast=nullcontext(),
                grad_clip=1.0,
            )
        )
        for _ in range(steps)
    ]


def _labels(spoken: pd.DataFrame) -> torch.Tensor:
    classes = sorted(spoken["label"].unique())
    return torch.tensor([classes.index(w) for w in spoken["label"]])


@pytest.mark.usefixtures("one_thread")
def test_the_log_mel_cnn_learns_spoken_words(spoken: pd.DataFrame) -> None:
    set_seed(0)
    features = log_mel_batch(list(spoken["waveform"]))
    losses = _train_losses(build_audio_cnn(n_classes=4, channels=(8, 16)), features, _labels(spoken), steps=25, lr=0.01)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.usefixtures("one_thread")
def test_the_wav2vec2_encoder_learns_spoken_words(spoken: pd.DataFrame) -> None:
    set_seed(0)
    batch = torch.stack([fix_duration(w, 9600) for w in spoken["waveform"]])  # the middle 0.6 s of each clip
    losses = _train_losses(build_wav2vec2(n_classes=4), batch, _labels(spoken), steps=30, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]


def test_a_saved_wav2vec2_loads_back_from_its_directory_with_the_same_outputs(tmp_path: Path) -> None:
    set_seed(0)
    model = build_wav2vec2(n_classes=3).eval()
    waveforms = torch.randn(2, 4000)
    save_wav2vec2(model, tmp_path / "w2v")
    loaded = build_wav2vec2(n_classes=3, pretrained_dir=tmp_path / "w2v").eval()
    assert isinstance(loaded, Wav2Vec2Classifier)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(waveforms), model(waveforms))


def test_a_wav2vec2_directory_without_weights_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="save_wav2vec2"):
        build_wav2vec2(n_classes=3, pretrained_dir=tmp_path)


# -- demo data -----------------------------------------------------------------
@needs_espeak
def test_the_demo_writes_a_clip_per_word_voice_speed_and_pitch_grouped_by_voice(tmp_path: Path) -> None:
    voices = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-029")
    csv = write_speech_commands(tmp_path, words=("up", "down"), voices=voices, speeds=(150,), pitches=(40, 60))
    frame = pd.read_csv(csv)
    assert len(frame) == 5 * 2 * 2
    assert frame.groupby("voice")["label"].value_counts().eq(2).all()
    waveforms, reasons = load_audio_column(frame["audio"], base_dir=csv.parent)
    assert reasons == [None] * len(frame)
    assert all(0.1 * SAMPLE_RATE < len(w) < 2 * SAMPLE_RATE for w in waveforms if w is not None)
    splits = assign_splits(frame, strategy="group", seed=0, ratios=(0.6, 0.2, 0.2), group_col="voice")
    assert frame.assign(split=splits).groupby("voice")["split"].nunique().eq(1).all()
    assert set(splits) == {"train", "val", "test"}


@needs_espeak
def test_every_demo_voice_speaks_differently(tmp_path: Path) -> None:
    """One speaker under two voice names would sit in two groups: the split's copies, not two voices."""
    csv = write_speech_commands(tmp_path, words=("yes",), speeds=(175,), pitches=(50,))
    clips = {(tmp_path / p).read_bytes() for p in pd.read_csv(csv)["audio"]}
    assert len(clips) == len(VOICES)


def test_the_demo_without_espeak_says_to_run_make_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DemoDataError, match="make audio"):
        write_speech_commands(tmp_path, words=("up",), voices=("en-us",))


# -- Label Studio --------------------------------------------------------------
def test_the_audio_label_config_plays_the_audio_column_and_offers_the_demo_words() -> None:
    config = load_label_config(Path(__file__).parents[2] / "label_config" / "audio_classification.xml", WORDS)
    assert (config.object_type, config.data_key) == ("Audio", "audio")
    assert config.build_result("stop")[0]["to_name"] == "audio"
