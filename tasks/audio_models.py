"""Networks for spoken-command audio: a small CNN on log-mel features and a Wav2Vec2 encoder on raw waveforms.

How they plug in: the CNN is the image CNN of `tasks.models` (architecture "cnn") with one input
channel, fed `tasks.audio.log_mel_batch` output, so the existing training loop, checkpoints and
serving code take it unchanged. The Wav2Vec2 classifier takes (rows, samples) 16 kHz waveforms
padded/cropped with `tasks.audio.fix_duration`; like the text transformer it is built from a local
config or loaded with `from_pretrained(local_dir)`, never from a hub. transformers is imported
lazily: serving a CNN does not need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.models import ImageCNN, ModelSpec

# A Wav2Vec2 small enough to train on a CPU in a test: 3 conv layers with the full model's total stride
# (5*8*8 = 320 samples, 20 ms at 16 kHz: a 1 s clip is 50 frames), 2 transformer layers of width 32.
TINY_WAV2VEC2: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (8, 16, 32),
    "conv_kernel": (10, 8, 8),
    "conv_stride": (5, 8, 8),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "classifier_proj_size": 16,
    # Layer norm before each block and in the conv encoder (wav2vec2-large-lv60's layout): with gradient
    # clipping at 1.0 the tiny model's loss then falls steadily from a random start.
    "do_stable_layer_norm": True,
    "feat_extract_norm": "layer",
    # No dropout or layer drop: at this size they make the loss jump from step to step more than it falls.
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "final_dropout": 0.0,
    "layerdrop": 0.0,
}


def build_audio_cnn(n_classes: int, *, channels: tuple[int, ...] = (16, 32), dropout: float = 0.1) -> ImageCNN:
    """The image CNN over a (rows, 1, mels, frames) log-mel: conv blocks, global average pool, MLP head.

    Batch norm after each conv also standardises the log-mel, whose values sit around -5 to -14.
    """
    spec = ModelSpec(
        architecture="cnn",
        n_classes=n_classes,
        in_channels=1,
        channels=list(channels),
        hidden=[32],
        norm="batch",
        dropout=dropout,
    )
    return ImageCNN(spec)


class Wav2Vec2Classifier(nn.Module):
    """A Hugging Face `Wav2Vec2ForSequenceClassification` taking raw waveforms and returning plain logits."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        # Zero mean, unit variance per clip: what Wav2Vec2FeatureExtractor(do_normalize=True) feeds the model.
        mean = waveforms.mean(dim=-1, keepdim=True)
        std = waveforms.std(dim=-1, keepdim=True)
        logits: torch.Tensor = self.hf(input_values=(waveforms - mean) / (std + 1e-7)).logits
        return logits


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the Wav2Vec2 encoder needs transformers: pip install transformers") from err
    return transformers


def build_wav2vec2(
    n_classes: int, *, pretrained_dir: str | Path | None = None, config: dict[str, Any] | None = None
) -> Wav2Vec2Classifier:
    """A Wav2Vec2 sequence classifier: from `pretrained_dir` (weights and config) when given, else a fresh
    model from `config` (keyword arguments of `Wav2Vec2Config`; default `TINY_WAV2VEC2`).

    Raises:
        FileNotFoundError: `pretrained_dir` is not a directory with config.json and weights; the message
            says how to make one.
    """
    transformers = _transformers()
    if pretrained_dir is not None:
        directory = _check_wav2vec2_dir(pretrained_dir)
        hf = transformers.Wav2Vec2ForSequenceClassification.from_pretrained(
            directory, num_labels=n_classes, local_files_only=True
        )
        return Wav2Vec2Classifier(hf)
    settings = {**TINY_WAV2VEC2, **(config or {})}
    # SpecAugment-style time masking needs clips of at least mask_time_length frames; off unless asked for.
    settings.setdefault("mask_time_prob", 0.0)
    hf_config = transformers.Wav2Vec2Config(num_labels=n_classes, **settings)
    return Wav2Vec2Classifier(transformers.Wav2Vec2ForSequenceClassification(hf_config))


def save_wav2vec2(model: Wav2Vec2Classifier, directory: str | Path) -> Path:
    """Write config.json and model.safetensors so `build_wav2vec2(pretrained_dir=directory)` loads it back."""
    path = Path(directory)
    model.hf.save_pretrained(path)  # type: ignore[operator]
    return path


def _check_wav2vec2_dir(path: str | Path) -> Path:
    directory = Path(path)
    weights = ("model.safetensors", "pytorch_model.bin")
    if not (directory / "config.json").is_file() or not any((directory / w).is_file() for w in weights):
        raise FileNotFoundError(
            f"pretrained_dir {directory} needs config.json and {' or '.join(weights)} (a Wav2Vec2 checkpoint); "
            "save one with tasks.audio_models.save_wav2vec2(model, dir) or model.save_pretrained(dir)"
        )
    return directory
