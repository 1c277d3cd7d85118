"""Audio items: read WAV files named in a column, log-mel features, and a fingerprint for near duplicates.

Pure torch/numpy and the standard library (`wave`): no Prefect, no MLflow, no torchaudio (no build
matches the pinned torch), so the mel filterbank and resampling are computed here.

How the modality plugs into the pipeline (column roles, as for text and image items):
- input column: `audio`, a path to a WAV file per row (relative paths resolve against the folder
  of the CSV that names them, like an image folder). `load_audio_column` reads the column and
  returns one reason per row that cannot be read, so the stage quarantines those rows
  (`tasks.quarantine.quarantine_rows(rows, step="audio", reason=...)`) instead of crashing.
- encoder: `log_mel_batch`, 16 kHz mono padded/cropped to a fixed duration, as a
  (rows, 1, mels, frames) tensor that the small CNN in `tasks.audio_models` (the image CNN of
  `tasks.models`) trains on; the Wav2Vec2 encoder there takes the raw 16 kHz waveform instead.
- near-duplicate key: `fingerprint_audio` (a 64-bit perceptual hash of the trimmed log-mel),
  compared with `find_audio_duplicates` like image pHashes.
- Label Studio: `label_config/audio_classification.xml`, an `<Audio>` object tag over `$audio`.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from tasks.neardup import find_image_duplicates, hash_image

SAMPLE_RATE = 16_000  # Hz: what speech models (Wav2Vec2, the Speech Commands set) expect
N_FFT = 400  # samples: a 25 ms window at 16 kHz, the usual speech frame
HOP_LENGTH = 160  # samples: 10 ms between frames
N_MELS = 40
DURATION_S = 1.0  # a spoken command fits in one second (as in the Speech Commands set)
# Added to the mel power before the log: -60 dB below a full-scale sine, so digital silence is finite.
LOG_FLOOR = 1e-6
# Frames quieter than this, relative to the loudest frame, are silence when trimming (a ratio: gain-free).
SILENCE_DB = -35.0
_TRIM_STEP = 32  # samples (2 ms): where trimming may cut
_WAV_FIX = (
    "save it as an uncompressed PCM WAV (16-bit, any rate), "
    "e.g. `ffmpeg -i IN -acodec pcm_s16le OUT.wav` or `sox IN -b 16 OUT.wav`"
)


class AudioFileError(ValueError):
    """A file in the audio column that cannot be used; `reason` is the message without the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"audio file {path}: {reason}")
        self.path = str(path)
        self.reason = reason


# -- reading -------------------------------------------------------------------
def _read_pcm(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    """Samples in [-1, 1], channels averaged to mono, and the sample rate."""
    if not path.is_file():
        raise AudioFileError(
            path, "does not exist; fix the path in the audio column (relative paths start at the CSV's folder)"
        )
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, RuntimeError) as exc:
        # The stdlib reads PCM only: float, compressed and non-RIFF files (MP3, FLAC) land here. A chunk
        # whose header claims more bytes than the file holds makes the stdlib's chunk reader raise a bare
        # RuntimeError (an empty message), so the type is named instead.
        detail = str(exc) or f"{type(exc).__name__}: a chunk runs past the end of the file"
        raise AudioFileError(path, f"is not a readable PCM WAV file ({detail}); {_WAV_FIX}") from None
    except OSError as exc:
        raise AudioFileError(path, f"cannot be read ({exc.strerror}); check its permissions") from None
    # A file cut short mid-frame ends in a partial sample; drop it rather than fail on the whole clip.
    raw = raw[: len(raw) // (width * channels) * (width * channels)]
    if width == 3:  # 24-bit: widen each little-endian sample to 32 bits
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        raw = np.pad(b, ((0, 0), (1, 0))).tobytes()
        width = 4
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        samples = np.frombuffer(raw, dtype=np.dtype(f"<i{width}")).astype(np.float32)
        samples /= float(2 ** (8 * width - 1))
    if samples.size == 0:
        raise AudioFileError(path, "holds no samples (an empty recording); record it again or remove the row")
    return samples.reshape(-1, channels).mean(axis=1), rate


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Band-limited resampling of a 1-D waveform by truncating or zero-padding its spectrum.

    Exact for a clip treated as periodic; for short clips this beats linear interpolation, which
    aliases everything above the new Nyquist frequency back into the speech band.
    """
    if orig_rate == new_rate:
        return waveform
    n_new = max(1, round(waveform.shape[-1] * new_rate / orig_rate))
    spectrum = torch.fft.rfft(waveform)
    keep = min(spectrum.shape[-1], n_new // 2 + 1)
    return torch.fft.irfft(spectrum[..., :keep], n=n_new) * (n_new / waveform.shape[-1])


def load_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A mono float32 waveform at `sample_rate` from a PCM WAV file.

    Raises:
        AudioFileError: the file is missing, not a PCM WAV, or empty; the message names the file and the fix.
    """
    samples, rate = _read_pcm(Path(path))
    return resample(torch.from_numpy(samples.copy()), rate, sample_rate)


def load_audio_column(
    paths: Iterable[object], *, base_dir: str | Path | None = None, sample_rate: int = SAMPLE_RATE
) -> tuple[list[torch.Tensor | None], list[str | None]]:
    """Read every file of an audio column; a row that cannot be read gets a reason instead of a waveform.

    Returns:
        (waveforms, reasons), one entry per row: a waveform and None, or None and the reason to
        quarantine the row with.
    """
    waveforms: list[torch.Tensor | None] = []
    reasons: list[str | None] = []
    for value in paths:
        if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
            waveforms.append(None)
            reasons.append("no file named in the audio column; give a WAV path or remove the row")
            continue
        path = Path(str(value))
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        try:
            waveforms.append(load_audio(path, sample_rate=sample_rate))
            reasons.append(None)
        except AudioFileError as exc:
            waveforms.append(None)
            reasons.append(str(exc))
    return waveforms, reasons


# -- features ------------------------------------------------------------------
def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)  # HTK's mel scale


def mel_filterbank(
    n_mels: int = N_MELS, *, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, f_min: float = 20.0
) -> torch.Tensor:
    """Triangular filters evenly spaced on the mel scale up to Nyquist: (n_mels, n_fft // 2 + 1)."""
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(
        float(_hz_to_mel(torch.tensor(f_min))), float(_hz_to_mel(torch.tensor(sample_rate / 2))), n_mels + 2
    )
    edges = 700.0 * (10.0 ** (edges_mel.double() / 2595.0) - 1.0)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def fix_duration(waveform: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Zero-pad at the end, or keep the middle `n_samples` (a word sits between leading and trailing silence)."""
    length = waveform.shape[-1]
    if length >= n_samples:
        start = (length - n_samples) // 2
        return waveform[..., start : start + n_samples]
    return torch.nn.functional.pad(waveform, (0, n_samples - length))


def log_mel(waveform: torch.Tensor, *, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Natural-log mel power spectrogram of a (..., samples) waveform: (..., n_mels, frames)."""
    spec = torch.stft(
        waveform,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        window=torch.hann_window(N_FFT, device=waveform.device),
        # Zero padding, not torch's default reflection: reflection needs more than n_fft / 2 samples and
        # would crash on a clip trimmed to a single click.
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real**2 + spec.imag**2
    mel = mel_filterbank(n_mels, sample_rate=sample_rate).to(waveform.device) @ power
    return torch.log(mel + LOG_FLOOR)


def log_mel_batch(
    waveforms: Sequence[torch.Tensor], *, duration_s: float = DURATION_S, n_mels: int = N_MELS
) -> torch.Tensor:
    """The encoder: 16 kHz waveforms padded/cropped to `duration_s`, as (rows, 1, n_mels, frames) log-mels."""
    n_samples = round(duration_s * SAMPLE_RATE)
    batch = torch.stack([fix_duration(w, n_samples) for w in waveforms])
    return log_mel(batch, n_mels=n_mels).unsqueeze(1)


# -- near duplicates -----------------------------------------------------------
def trim_silence(waveform: torch.Tensor, *, threshold_db: float = SILENCE_DB) -> torch.Tensor:
    """The span from the first to the last 2 ms step whose 10 ms energy is within `threshold_db` of the loudest.

    The threshold is relative to the clip's own peak, so a copy at another gain trims to the same span;
    the fine step keeps a copy shifted by a few samples from trimming a whole frame differently.
    """
    if waveform.numel() == 0 or float(waveform.abs().max()) == 0.0:  # empty, or digital silence throughout
        return waveform
    # Zeros on both sides: a clip whose speech starts at sample 0 trims like a copy with leading silence.
    padded = torch.nn.functional.pad(waveform, (HOP_LENGTH, HOP_LENGTH))
    energy = torch.nn.functional.avg_pool1d(padded.pow(2)[None, None], HOP_LENGTH, stride=_TRIM_STEP).flatten()
    loud = (energy >= energy.max() * 10 ** (threshold_db / 10)).nonzero().flatten()
    return padded[int(loud[0]) * _TRIM_STEP : int(loud[-1]) * _TRIM_STEP + HOP_LENGTH]


def _fingerprint_image(waveform: torch.Tensor) -> npt.NDArray[np.float64]:
    speech = trim_silence(waveform)
    # Peak-normalise so the log floor sits at the same level below the speech whatever the recording gain.
    speech = speech / speech.abs().max().clamp(min=1e-12)
    return log_mel(speech).double().numpy()


def fingerprint_audio(waveform: torch.Tensor) -> int:
    """A 64-bit perceptual hash of a 16 kHz waveform: pHash of its silence-trimmed log-mel spectrogram.

    A gain change adds a constant to the log-mel, which only moves the DCT's DC term (left out of the
    hash); trimming to the speech removes offsets and padding. Re-encodings and copies at another
    gain hash within a few bits of each other; different words differ in many.

    Measured on the 320-clip espeak demo (2026-12): no two different words within 8 bits (closest 12);
    copies at a third of the gain, shifted by 2 ms, within 4. Not matched: a copy that went through
    8 kHz (telephone band, up to 18 bits off). The same word by two espeak voices is often within 6
    bits (one synthesiser, median 14): merging split groups on this key would join the demo's voices.
    """
    return hash_image(_fingerprint_image(waveform))


def find_audio_duplicates(waveforms: Sequence[torch.Tensor], *, max_distance: int = 6) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of 16 kHz waveforms whose fingerprints differ in at most `max_distance` bits."""
    return find_image_duplicates([_fingerprint_image(w) for w in waveforms], max_distance=max_distance)
