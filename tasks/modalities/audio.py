"""Audio: one column of WAV file paths (spoken commands); a small CNN on log-mels; fingerprint near duplicates.

The WAV reading, log-mel and fingerprint live in `tasks.audio` (imported inside the methods: it pulls in
scipy through `tasks.neardup`, which serving a model does not otherwise need).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.featurize import EncodedInputs, TensorInputs
from tasks.modalities import register_modality
from tasks.modalities.base import DuplicateSettings, Edges, FittedEncoder, Modality, Role, require_columns

if TYPE_CHECKING:
    from tasks.models import ModelSpec
    from tasks.train import TrainConfig


class AudioModality(Modality):
    name: ClassVar[str] = "audio"
    roles: ClassVar[tuple[Role, ...]] = (Role("audio", "audio_col", "the column holding WAV file paths"),)
    # "cnn" is the image modality's name: the same ImageCNN class over one log-mel channel is "audio_cnn".
    architectures: ClassVar[tuple[str, ...]] = ("audio_cnn",)
    label_studio_tag: ClassVar[str | None] = "Audio"
    drafted_train: ClassVar[dict[str, Any]] = {
        "channels": [16, 32],
        "norm": "batch",
        "epochs": 20,
        "patience": 4,
        "batch_size": 32,
    }

    def _column(self, columns: Mapping[str, Any]) -> str:
        return str(columns.get("audio_col"))

    def unusable_items(self, df: pd.DataFrame, columns: Mapping[str, Any]) -> list[str | None]:
        """The reason each row's WAV file cannot be read (missing, not PCM, empty), None where it can."""
        from tasks.audio import load_audio_column

        self.check_columns(columns)
        require_columns(df, [self._column(columns)])
        _, reasons = load_audio_column(df[self._column(columns)].tolist())
        return reasons

    def _log_mels(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: Mapping[str, Any]) -> torch.Tensor:
        from tasks.audio import AudioFileError, load_audio_column, log_mel_batch

        paths = df[self._column(columns)].tolist()
        waveforms, reasons = load_audio_column(paths)
        for path, reason in zip(paths, reasons, strict=True):
            if reason is not None:  # the pipeline quarantined these rows; a caller passing one is told which
                raise AudioFileError(str(path), reason.removeprefix(f"audio file {path}: "))
        if not waveforms:
            return torch.zeros(0, 1, int(settings["n_mels"]), int(settings["frames"]))
        return log_mel_batch(
            [w for w in waveforms if w is not None],
            duration_s=float(settings["duration_s"]),
            n_mels=int(settings["n_mels"]),
        )

    def fit_encoder(
        self, train: pd.DataFrame, config: TrainConfig, spec: ModelSpec, columns: Mapping[str, Any]
    ) -> FittedEncoder:
        from tasks.audio import DURATION_S, HOP_LENGTH, N_MELS, SAMPLE_RATE

        self.check_columns(columns)
        require_columns(train, [self._column(columns)])
        frames = round(DURATION_S * SAMPLE_RATE) // HOP_LENGTH + 1
        settings: dict[str, Any] = {"duration_s": DURATION_S, "n_mels": N_MELS, "frames": frames}
        mels = self._log_mels(train, columns, settings)
        # Standardised with the train log-mels' mean and std: log power sits around -5 to -14.
        std = float(mels.std()) if mels.numel() > 1 else 1.0
        settings |= {"mean": float(mels.mean()) if mels.numel() else 0.0, "std": std if std > 1e-12 else 1.0}
        spec.in_channels = 1
        return FittedEncoder({"audio": settings})

    def encode(
        self,
        df: pd.DataFrame,
        *,
        architecture: str,
        features: Mapping[str, Any],
        columns: Mapping[str, Any],
        tokenizer: Any,
    ) -> EncodedInputs:
        settings = features["audio"]
        mels = self._log_mels(df, columns, settings)
        return TensorInputs((mels - float(settings["mean"])) / float(settings["std"]))

    def build_network(self, spec: ModelSpec, *, initialise: bool) -> nn.Module:
        from tasks.models import ImageCNN

        return ImageCNN(spec)

    def onnx_example(self, spec: ModelSpec, features: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        settings = features["audio"]
        return {"mels": torch.zeros(2, 1, int(settings["n_mels"]), int(settings["frames"]))}

    def onnx_inputs(self, inputs: EncodedInputs, spec: ModelSpec) -> dict[str, np.ndarray]:
        assert isinstance(inputs, TensorInputs)
        return {"mels": inputs.tensors[0].numpy()}

    def duplicate_keys(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> list[Any]:
        """The clip's fingerprint (`tasks.audio.fingerprint_audio`); None for a file that cannot be read."""
        from tasks.audio import fingerprint_audio, load_audio_column

        waveforms, _ = load_audio_column(df[self._column(columns)].tolist())
        return [None if w is None else fingerprint_audio(w) for w in waveforms]

    def duplicate_edges(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> Edges:
        """Clips whose fingerprints differ in at most `split.audio_max_distance` bits (default 2).

        Tighter than images' 6: at 6 the same word by two espeak voices often collides, and joining them
        would merge the voices' groups; copies of one recording at another gain or shift stay within 4.
        """
        from tasks.audio import find_audio_duplicates, load_audio_column
        from tasks.neardup import as_edges

        waveforms, _ = load_audio_column(df[self._column(columns)].tolist())
        readable = [i for i, w in enumerate(waveforms) if w is not None]
        pairs = find_audio_duplicates([w for w in waveforms if w is not None], max_distance=settings.audio_max_distance)
        return as_edges([(readable[i], readable[j]) for i, j in pairs])

    def task_data(self, value: Any) -> Any:
        """A WAV path as text (Label Studio plays it by URL or local-files path)."""
        if isinstance(value, str | Path):
            return str(value)
        raise ValueError(f"the audio column holds {type(value).__name__} values; it needs WAV file paths")


AUDIO = register_modality(AudioModality())
