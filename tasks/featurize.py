"""Turn DataFrame columns into model-ready tensors, the same way at training and serving time.

Serving code imports this module, so it depends only on the standard library, numpy, pandas and
torch (PIL and transformers only lazily, for image paths and the transformer architecture). Every
fitted value (standardisation statistics, categories, hashing settings) is a plain JSON-able dict
so a saved predictor carries it in its spec.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

# Words with inner apostrophes ("isn't") and punctuation as tokens ("!" carries sentiment).
_TOKEN = re.compile(r"[\w']+|[^\w\s]")


# ----------------------------------------------------------------------------------------------------
# Text: hashed word and character n-grams (fastText-style bag)
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HashingSpec:
    """How texts become bucket ids: lower-cased word n-grams plus character n-grams within `<word>`."""

    n_buckets: int = 2**17
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] | None = (3, 5)
    lowercase: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HashingSpec:
        char = data.get("char_ngrams")
        return cls(
            n_buckets=int(data["n_buckets"]),
            word_ngrams=(int(data["word_ngrams"][0]), int(data["word_ngrams"][1])),
            char_ngrams=None if char is None else (int(char[0]), int(char[1])),
            lowercase=bool(data.get("lowercase", True)),
        )


def _bucket(gram: str, n_buckets: int) -> int:
    # crc32, not hash(): Python's str hash is salted per process, so a saved model would see other buckets.
    return zlib.crc32(gram.encode("utf-8")) % n_buckets


def _word_buckets(word: str, spec: HashingSpec) -> list[int]:
    """Buckets of a word's unigram (if word_ngrams starts at 1) and of its character n-grams."""
    # Prefixes "w"/"c" keep a word n-gram and an identical character n-gram in different buckets.
    grams = ["w" + word] if spec.word_ngrams[0] == 1 else []
    if spec.char_ngrams is not None:
        marked = f"<{word}>"  # boundary marks, as fastText: "<un" (prefix) differs from "un" inside a word
        for n in range(spec.char_ngrams[0], spec.char_ngrams[1] + 1):
            grams.extend("c" + marked[i : i + n] for i in range(len(marked) - n + 1))
    return [_bucket(g, spec.n_buckets) for g in grams]


def hash_texts(texts: Sequence[str] | pd.Series, spec: HashingSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Hash texts into a flat bucket-id tensor and per-text offsets (the `nn.EmbeddingBag` input).

    Returns:
        (ids, offsets): int64 tensors; text i owns `ids[offsets[i]:offsets[i + 1]]`, and offsets has
        len(texts) + 1 entries. An empty or missing text gets one id for the empty string, so every
        bag is non-empty.
    """
    # Words repeat far more than texts do: hash each distinct word's grams once (~5x faster).
    words_seen: dict[str, list[int]] = {}
    phrases_seen: dict[str, int] = {}
    ids: list[int] = []
    offsets = [0]
    empty = _bucket("", spec.n_buckets)
    lo, hi = spec.word_ngrams
    for text in texts:
        raw = text if isinstance(text, str) else ""
        words = _TOKEN.findall(raw.lower() if spec.lowercase else raw)
        start = len(ids)
        for word in words:
            buckets = words_seen.get(word)
            if buckets is None:
                buckets = words_seen[word] = _word_buckets(word, spec)
            ids.extend(buckets)
        for n in range(max(lo, 2), hi + 1):
            for i in range(len(words) - n + 1):
                phrase = "w" + " ".join(words[i : i + n])
                bucket = phrases_seen.get(phrase)
                if bucket is None:
                    bucket = phrases_seen[phrase] = _bucket(phrase, spec.n_buckets)
                ids.append(bucket)
        if len(ids) == start:
            ids.append(empty)
        offsets.append(len(ids))
    return torch.tensor(ids, dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64)


def gather_bags(ids: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Select rows of a (ids, offsets) bag table without a Python loop.

    Returns:
        (ids, starts) for `nn.EmbeddingBag(input, offsets=starts)`: starts has one entry per row.
    """
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    new_starts = torch.zeros_like(lengths)
    if len(lengths) > 1:
        new_starts[1:] = torch.cumsum(lengths, 0)[:-1]
    total = int(lengths.sum())
    # Position j of the output belongs to row r; its source is starts[r] + (j - new_starts[r]).
    shift = torch.repeat_interleave(starts - new_starts, lengths, output_size=total)
    return ids[torch.arange(total, dtype=torch.int64) + shift], new_starts


def bags_to_padded(ids: torch.Tensor, offsets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(ids, offsets) as an (n_texts, longest) matrix padded with `pad_id` (the ONNX-friendly input)."""
    lengths = offsets[1:] - offsets[:-1]
    n, longest = len(lengths), int(lengths.max()) if len(lengths) else 0
    out = torch.full((n, max(longest, 1)), pad_id, dtype=torch.int64)
    mask = torch.arange(max(longest, 1)).unsqueeze(0) < lengths.unsqueeze(1)
    out[mask] = ids
    return out


# ----------------------------------------------------------------------------------------------------
# Tabular: numeric columns standardised, categorical columns one-hot, both fitted on train only
# ----------------------------------------------------------------------------------------------------
@dataclass
class TabularSpec:
    """Fitted tabular encoding: means/stds of numeric columns and the train categories of the others."""

    numeric: list[str] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    stds: list[float] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.numeric) + sum(len(v) for v in self.categorical.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularSpec:
        return cls(
            numeric=list(data["numeric"]),
            means=[float(v) for v in data["means"]],
            stds=[float(v) for v in data["stds"]],
            categorical={k: list(v) for k, v in data["categorical"].items()},
        )


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def fit_tabular(df: pd.DataFrame, feature_cols: Sequence[str]) -> TabularSpec:
    """Learn the encoding of `feature_cols` from the training frame."""
    _require_columns(df, feature_cols)
    spec = TabularSpec()
    for col in feature_cols:
        series = df[col]
        if _is_numeric(series):
            values = series.astype("float64")
            mean = float(values.mean()) if values.notna().any() else 0.0
            std = float(values.std(ddof=0)) if values.notna().sum() > 1 else 0.0
            spec.numeric.append(col)
            spec.means.append(mean)
            # A constant column would divide by zero; 1.0 leaves it centred at 0.
            spec.stds.append(std if std > 1e-12 else 1.0)
        else:
            spec.categorical[col] = sorted(series.dropna().astype(str).unique().tolist())
    return spec


def encode_tabular(df: pd.DataFrame, spec: TabularSpec) -> torch.Tensor:
    """Encode rows with a fitted spec: missing numbers become the train mean (0 after scaling),
    unseen categories an all-zero one-hot block."""
    _require_columns(df, [*spec.numeric, *spec.categorical])
    blocks: list[np.ndarray] = []
    if spec.numeric:
        num = df[spec.numeric].astype("float64").to_numpy(copy=True)
        means, stds = np.asarray(spec.means), np.asarray(spec.stds)
        num = (num - means) / stds
        num[np.isnan(num)] = 0.0
        blocks.append(num)
    for col, categories in spec.categorical.items():
        lookup = {c: i for i, c in enumerate(categories)}
        codes = np.asarray(
            [lookup.get(v, -1) if isinstance(v, str) else -1 for v in df[col].astype("str").where(df[col].notna())],
            dtype=np.int64,
        )
        onehot = np.zeros((len(df), len(categories)))
        seen = codes >= 0
        onehot[np.nonzero(seen)[0], codes[seen]] = 1.0
        blocks.append(onehot)
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(df), 0))
    return torch.from_numpy(matrix.astype(np.float32))


# ----------------------------------------------------------------------------------------------------
# Images: arrays (H, W), (H, W, C) or file paths, scaled by train pixel mean/std
# ----------------------------------------------------------------------------------------------------
@dataclass
class ImageSpec:
    """Fitted image encoding: shape (C, H, W) and the train pixel mean/std."""

    channels: int
    height: int
    width: int
    mean: float
    std: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSpec:
        return cls(**{k: data[k] for k in ("channels", "height", "width", "mean", "std")})


def _load_image(cell: Any) -> np.ndarray:
    if isinstance(cell, (str, Path)):
        from PIL import Image  # lazy: only image paths need Pillow

        with Image.open(cell) as img:
            return np.asarray(img, dtype=np.float32)
    return np.asarray(cell, dtype=np.float32)


def _stack_images(cells: Sequence[Any]) -> np.ndarray:
    arrays = [_load_image(c) for c in cells]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images have different shapes {sorted(shapes)[:5]}; resize them to one shape before training")
    stack = np.stack(arrays) if arrays else np.zeros((0, 1, 1), dtype=np.float32)
    if stack.ndim == 3:  # (N, H, W): greyscale
        stack = stack[:, None]
    elif stack.ndim == 4:  # (N, H, W, C) as images are stored; the CNN wants channels first
        stack = stack.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"image cells must be (H, W) or (H, W, C) arrays or paths; got shape {stack.shape[1:]}")
    return np.ascontiguousarray(stack)


def fit_images(cells: Sequence[Any]) -> ImageSpec:
    """Learn the image shape and pixel statistics from the training images."""
    stack = _stack_images(cells)
    std = float(stack.std())
    channels, height, width = (int(s) for s in stack.shape[1:])
    return ImageSpec(channels, height, width, mean=float(stack.mean()), std=std if std > 1e-12 else 1.0)


def encode_images(cells: Sequence[Any], spec: ImageSpec) -> torch.Tensor:
    """Images as a float tensor (N, C, H, W), scaled with the train statistics."""
    stack = _stack_images(cells)
    if stack.shape[1:] != (spec.channels, spec.height, spec.width) and len(stack):
        raise ValueError(
            f"images have shape {stack.shape[1:]} (C, H, W) but the model was trained on "
            f"{(spec.channels, spec.height, spec.width)}; resize them to match"
        )
    return torch.from_numpy((stack - spec.mean) / spec.std)


# ----------------------------------------------------------------------------------------------------
# Transformer: tokenise with the tokenizer saved next to the weights
# ----------------------------------------------------------------------------------------------------
def tokenize_texts(tokenizer: Any, texts: Sequence[str] | pd.Series, max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise to padded `input_ids` / `attention_mask` tensors (truncated to `max_length`)."""
    clean = [t if isinstance(t, str) else "" for t in texts]
    encoded = tokenizer(clean, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(
            f"columns {missing} are missing from the frame (it has {list(df.columns)}); "
            "pass frames with the columns the model was trained on"
        )


# ----------------------------------------------------------------------------------------------------
# Encoded inputs: one object per frame that hands out batches by row index (no per-sample __getitem__)
# ----------------------------------------------------------------------------------------------------
class EncodedInputs:
    """Model inputs for a whole frame, sliced into batches by row-index tensors.

    `rows` must live on `device`: inputs moved to the GPU (`to`) are sliced there, with no copy
    from the host per batch.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The positional model arguments for `rows`."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def nbytes(self) -> int:
        """Memory the tensors take."""
        return 0

    def to(self, device: torch.device) -> EncodedInputs:
        """The same inputs on `device` (a no-op where slicing on the host is as fast)."""
        return self


class TensorInputs(EncodedInputs):
    """Dense tensors whose first dimension is the row (tabular features, images)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t[rows] for t in self.tensors)

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self.tensors)

    def to(self, device: torch.device) -> EncodedInputs:
        return TensorInputs(*(t.to(device) for t in self.tensors))


class BagInputs(EncodedInputs):
    """Hashed n-gram bags stored flat (ids + offsets); a batch is (ids, starts) for nn.EmbeddingBag.

    Stays on the host: building a batch needs its total length, which on the GPU would cost a sync,
    and the batch itself is a few kilobytes to copy.
    """

    def __init__(self, ids: torch.Tensor, offsets: torch.Tensor) -> None:
        self.ids, self.offsets = ids, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return gather_bags(self.ids, self.offsets, rows)

    @property
    def nbytes(self) -> int:
        return self.ids.element_size() * (self.ids.nelement() + self.offsets.nelement())


class TokenInputs(EncodedInputs):
    """Padded token ids and attention mask; each batch is cut to its longest row (less padding to compute).

    Stays on the host: the cut needs the batch's longest row as a Python int, and a batch of token
    ids is small next to a transformer's compute.
    """

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.input_ids, self.attention_mask = input_ids, attention_mask
        self.lengths = attention_mask.sum(1)

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        longest = max(int(self.lengths[rows].max()), 1) if len(rows) else 1
        return self.input_ids[rows, :longest], self.attention_mask[rows, :longest]

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.input_ids, self.attention_mask))
