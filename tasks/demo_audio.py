"""Spoken-command demo data synthesised with Debian's espeak-ng: WAV files plus a CSV naming each one.

Nothing ships a speech-commands set offline, so the words are spoken by espeak-ng's voices at
several speeds and pitches. The CSV has the audio modality's columns: `audio` (the WAV's path,
relative to the CSV's folder, like an image folder), `label` (the word) and `voice`, the group
column: clips of one voice share its timbre, so a split by voice measures how a model does on a
speaker it never heard, and no voice may straddle splits.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tasks.demo_data import DemoDataError

WORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")
# espeak-ng's English voices, some with a variant (`+f2`: a female variant, `+klatt`: another synthesiser).
# Variants go on en-us: Debian's espeak-ng ignores them on en-gb (en-gb+f4 and en-gb+klatt wrote files
# byte-identical to en-gb's, one speaker under three group names, which the split then quarantined as copies).
VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-us+f2",
    "en-us+f3",
    "en-us+f4",
    "en-us+m3",
    "en-us+klatt",
)
SPEEDS = (130, 175)  # words per minute (espeak-ng's default is 175)
PITCHES = (30, 70)  # espeak-ng's 0-99 scale (default 50)
CSV_NAME = "speech_commands.csv"


def espeak_path() -> str:
    """The espeak-ng executable.

    Raises:
        DemoDataError: espeak-ng is not installed; the message says to run `make audio`.
    """
    found = shutil.which("espeak-ng")
    if found is None:
        raise DemoDataError(
            "the speech-commands demo data is synthesised with espeak-ng, which is not on PATH; "
            "run `make audio` (it installs Debian's espeak-ng package with apt-get)"
        )
    return found


def synthesise_word(word: str, path: Path, *, voice: str, speed: int, pitch: int, espeak: str | None = None) -> Path:
    """Speak `word` into the WAV file `path` (espeak-ng writes 16-bit mono PCM at 22,050 Hz).

    Raises:
        DemoDataError: espeak-ng is missing or fails (the message carries its error, e.g. an unknown voice).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [espeak or espeak_path(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    # The file is checked too: a write that fails half-way can leave a bare 44-byte WAV header behind.
    if done.returncode != 0 or not path.is_file() or path.stat().st_size <= 44:
        raise DemoDataError(
            f"espeak-ng could not speak {word!r} with voice {voice!r} into {path}: "
            f"{done.stderr.strip() or 'no audio written'}; list the voices with `espeak-ng --voices=en`"
        )
    return path


def write_speech_commands(
    destination: str | Path,
    *,
    words: Sequence[str] = WORDS,
    voices: Sequence[str] = VOICES,
    speeds: Sequence[int] = SPEEDS,
    pitches: Sequence[int] = PITCHES,
    absolute_paths: bool = False,
    rows: int | None = None,
) -> Path:
    """Write one WAV per word x voice x speed x pitch under `destination`, and the CSV naming them.

    Args:
        absolute_paths: name each WAV by its absolute path (what the pipeline reads: training and
            serving open the file as named, from whatever directory they run in).
        rows: keep only the first N clips (whole voices first, as they are written); None keeps all.

    Returns:
        The CSV's path; its `audio` column holds paths relative to its folder unless `absolute_paths`.
    """
    root = Path(destination)
    espeak = espeak_path()
    written: list[dict[str, object]] = []
    for voice in voices:
        folder = voice.replace("+", "_")  # `+` is legal in file names but awkward in URLs and shells
        for word in words:
            for speed in speeds:
                for pitch in pitches:
                    if rows is not None and len(written) >= rows:
                        break
                    relative = Path("wav") / folder / f"{word}_s{speed}_p{pitch}.wav"
                    wav = synthesise_word(word, root / relative, voice=voice, speed=speed, pitch=pitch, espeak=espeak)
                    named = str(wav.resolve()) if absolute_paths else relative.as_posix()
                    written.append({"audio": named, "label": word, "voice": voice, "speed": speed, "pitch": pitch})
    csv = root / CSV_NAME
    pd.DataFrame(written).to_csv(csv, index=False)
    return csv
