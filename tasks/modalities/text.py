"""Text: one column of strings; hashed n-gram bags or a fine-tuned transformer; MinHash near duplicates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import nn

from tasks.featurize import (
    BagInputs,
    EncodedInputs,
    HashingSpec,
    TokenInputs,
    bags_to_padded,
    hash_texts,
    tokenize_texts,
)
from tasks.modalities import register_modality
from tasks.modalities.base import DuplicateSettings, Edges, FittedEncoder, Modality, Role, require_columns

if TYPE_CHECKING:
    from tasks.leakage import LeakageCheck
    from tasks.models import ModelSpec
    from tasks.train import TrainConfig

HF_DIR = "hf"  # tokenizer + model config of a fine-tuned transformer, inside a saved predictor


class TextModality(Modality):
    name: ClassVar[str] = "text"
    roles: ClassVar[tuple[Role, ...]] = (Role("text", "text_col", "the column holding the texts"),)
    # hashed_bag: fast, from scratch; transformer: fine-tuned from train.pretrained_dir.
    architectures: ClassVar[tuple[str, ...]] = ("hashed_bag", "transformer")
    label_studio_tag: ClassVar[str | None] = "Text"
    drafted_train: ClassVar[dict[str, Any]] = {"epochs": 30, "patience": 4, "batch_size": 64}

    def _column(self, columns: Mapping[str, Any]) -> str:
        return str(columns.get("text_col"))

    # -- encoding ------------------------------------------------------------------------------------------------
    def fit_encoder(
        self, train: pd.DataFrame, config: TrainConfig, spec: ModelSpec, columns: Mapping[str, Any]
    ) -> FittedEncoder:
        self.check_columns(columns)
        require_columns(train, [self._column(columns)])
        if spec.architecture == "hashed_bag":
            hashing = HashingSpec(config.n_buckets, config.word_ngrams, config.char_ngrams)
            return FittedEncoder({"hashing": hashing.to_dict()})
        from tasks.models import check_pretrained_dir

        directory = check_pretrained_dir(config.pretrained_dir)
        try:
            from transformers import AutoTokenizer
        except ImportError as err:
            raise ImportError("architecture='transformer' needs transformers: pip install transformers") from err
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        spec.pretrained_dir = str(directory)
        return FittedEncoder({"max_length": config.max_length}, tokenizer)

    def encode(
        self,
        df: pd.DataFrame,
        *,
        architecture: str,
        features: Mapping[str, Any],
        columns: Mapping[str, Any],
        tokenizer: Any,
    ) -> EncodedInputs:
        texts = df[self._column(columns)]
        if architecture == "hashed_bag":
            return BagInputs(*hash_texts(texts, HashingSpec.from_dict(features["hashing"])))
        encoded = tokenize_texts(tokenizer, texts, int(features["max_length"]))
        return TokenInputs(encoded["input_ids"], encoded["attention_mask"])

    # -- networks ------------------------------------------------------------------------------------------------
    def build_network(self, spec: ModelSpec, *, initialise: bool) -> nn.Module:
        from tasks.models import HashedBagClassifier, load_transformer

        if spec.architecture == "transformer":
            # Training starts from the pretrained weights; serving rebuilds from config and loads its own.
            return load_transformer(spec.pretrained_dir or "", spec.n_classes, from_weights=initialise)
        return HashedBagClassifier(spec)

    def initialises_itself(self, architecture: str) -> bool:
        return architecture == "transformer"

    def saved_spec(self, spec: ModelSpec) -> ModelSpec:
        if spec.architecture == "transformer":
            return replace(spec, pretrained_dir=HF_DIR)  # relative to the saved directory
        return spec

    def save_extras(self, model: nn.Module, tokenizer: Any, directory: Path) -> None:
        if tokenizer is None:
            return
        hf_dir = directory / HF_DIR
        model.hf.config.save_pretrained(hf_dir)  # type: ignore[union-attr, operator]
        tokenizer.save_pretrained(hf_dir)

    def load_extras(self, spec: ModelSpec, directory: Path) -> tuple[ModelSpec, Any]:
        if spec.architecture != "transformer":
            return spec, None
        from transformers import AutoTokenizer  # lazy: only this architecture needs transformers

        tokenizer = AutoTokenizer.from_pretrained(directory / HF_DIR, local_files_only=True)
        return replace(spec, pretrained_dir=str(directory / HF_DIR)), tokenizer

    # -- ONNX ----------------------------------------------------------------------------------------------------
    def onnx_example(self, spec: ModelSpec, features: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if spec.architecture == "hashed_bag":
            return {"ids": torch.tensor([[1, 2, spec.n_buckets], [3, 4, 5]], dtype=torch.int64)}
        return {
            "input_ids": torch.tensor([[101, 2000, 102]] * 2),
            "attention_mask": torch.ones(2, 3, dtype=torch.int64),
        }

    def onnx_inputs(self, inputs: EncodedInputs, spec: ModelSpec) -> dict[str, np.ndarray]:
        if isinstance(inputs, BagInputs):
            return {"ids": bags_to_padded(inputs.ids, inputs.offsets, spec.n_buckets).numpy()}
        assert isinstance(inputs, TokenInputs)
        return {"input_ids": inputs.input_ids.numpy(), "attention_mask": inputs.attention_mask.numpy()}

    def onnx_variable_length(self, architecture: str) -> bool:
        return True

    # -- near duplicates and leakage -----------------------------------------------------------------------------
    def duplicate_keys(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> list[Any]:
        """The normalised text (`neardup.canonical_text`); an empty one joins nothing."""
        from tasks.neardup import canonical_text

        return [canonical_text(t) or None for t in column_texts(df[self._column(columns)])]

    def duplicate_edges(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> Edges:
        """MinHash near duplicates, or, whatever the near-duplicate mode, exact copies after normalisation."""
        if settings.near_duplicates == "minhash":
            from tasks.neardup import score_near_duplicates

            pairs, _ = score_near_duplicates(
                column_texts(df[self._column(columns)]), threshold=settings.near_duplicate_threshold
            )
            return pairs
        return super().duplicate_edges(df, columns, settings)

    def leakage_checks(
        self, frame: pd.DataFrame, split: npt.NDArray[Any], columns: Mapping[str, Any], *, near_threshold: float | None
    ) -> list[LeakageCheck]:
        """Exact and near duplicates of a text across splits (skipped without a text column)."""
        text_col = columns.get("text_col")
        return [_check_exact(frame, split, text_col), _check_near(frame, split, text_col, near_threshold)]


def column_texts(values: pd.Series) -> list[str]:
    """A text column's cells as strings (a missing cell is the empty text)."""
    return ["" if pd.isna(v) else str(v) for v in values]


def _check_exact(frame: pd.DataFrame, split: npt.NDArray[Any], text_col: str | None) -> LeakageCheck:
    from tasks.columns import SPLITS
    from tasks.leakage import DUPLICATE_FIX, EXAMPLES, LeakageCheck, skipped_check, snippet, text_of
    from tasks.neardup import canonical_text

    name = "exact_duplicates"
    if text_col is None:
        return skipped_check(name, "hard", "text_col")
    norms = pd.Series([canonical_text(text_of(v)) for v in frame[text_col]], dtype=object)
    norms = norms.where(norms.str.len() > 0)
    spans = pd.DataFrame({"norm": norms.to_numpy(), "split": split}).dropna().groupby("norm")["split"].nunique()
    crossing = spans[spans > 1]
    rows = int(norms.isin(crossing.index).sum())
    examples = []
    for norm in crossing.index[:EXAMPLES]:
        members = np.flatnonzero((norms == norm).to_numpy())
        examples.append(
            {
                "text": snippet(frame[text_col].iloc[members[0]]),
                "rows": {s: frame.index[members[split[members] == s]].tolist() for s in SPLITS},
            }
        )
    return LeakageCheck(
        name=name,
        severity="hard",
        passed=len(crossing) == 0,
        summary=f"{len(crossing)} texts ({rows} rows) appear in more than one split"
        if len(crossing)
        else "no text appears in two splits",
        details={"clusters_across_splits": len(crossing), "rows_involved": rows},
        examples=examples,
        fix=DUPLICATE_FIX,
    )


def _check_near(
    frame: pd.DataFrame, split: npt.NDArray[Any], text_col: str | None, threshold: float | None
) -> LeakageCheck:
    from tasks.leakage import DUPLICATE_FIX, EXAMPLES, LeakageCheck, skipped_check, snippet, text_of
    from tasks.neardup import canonical_text, connected_groups, score_near_duplicates

    name = "near_duplicates"
    if text_col is None:
        return skipped_check(name, "hard", "text_col")
    if threshold is None:
        return skipped_check(name, "hard", "near_duplicates: minhash")
    texts = [text_of(v) for v in frame[text_col]]
    norms = np.array([canonical_text(t) for t in texts], dtype=object)
    pairs, jaccard = score_near_duplicates(texts, threshold=threshold)
    near = norms[pairs[:, 0]] != norms[pairs[:, 1]] if len(pairs) else np.zeros(0, dtype=bool)
    # Clusters joined through exact copies count too: a near duplicate of a train
    # text's copy is still a near duplicate of the train text.
    clusters = connected_groups(len(texts), pairs)
    per_cluster = pd.DataFrame({"c": clusters, "s": split, "n": norms})
    stats = per_cluster.groupby("c").agg(splits=("s", "nunique"), texts=("n", "nunique"))
    leaking = stats[(stats["splits"] > 1) & (stats["texts"] > 1)].index
    cross = near & (split[pairs[:, 0]] != split[pairs[:, 1]]) if len(pairs) else near
    order = np.argsort(-jaccard[cross], kind="stable")[:EXAMPLES]
    examples = []
    for i, j, score in zip(pairs[cross][order, 0], pairs[cross][order, 1], jaccard[cross][order], strict=True):
        examples.append(
            {
                "jaccard": round(float(score), 3),
                "a": {"row": frame.index[i], "split": split[i], "text": snippet(texts[i])},
                "b": {"row": frame.index[j], "split": split[j], "text": snippet(texts[j])},
            }
        )
    rows = int(np.isin(clusters, leaking).sum())
    return LeakageCheck(
        name=name,
        severity="hard",
        passed=len(leaking) == 0,
        summary=f"{len(leaking)} near-duplicate clusters ({rows} rows) span splits, "
        f"{int(cross.sum())} pairs across splits at Jaccard >= {threshold}"
        if len(leaking)
        else f"no near duplicates (Jaccard >= {threshold}) across splits",
        details={
            "threshold": threshold,
            "clusters_across_splits": len(leaking),
            "rows_involved": rows,
            "pairs_across_splits": int(cross.sum()),
        },
        examples=examples,
        fix=DUPLICATE_FIX,
    )


TEXT = register_modality(TextModality())
