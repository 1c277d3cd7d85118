"""Tabular: feature columns (numbers standardised, categories one-hot); an MLP; equal rounded rows are duplicates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.featurize import EncodedInputs, TabularSpec, TensorInputs, encode_tabular, fit_tabular
from tasks.modalities import register_modality
from tasks.modalities.base import DuplicateSettings, FittedEncoder, Modality, Role

if TYPE_CHECKING:
    from tasks.models import ModelSpec
    from tasks.train import TrainConfig


class TabularModality(Modality):
    name: ClassVar[str] = "tabular"
    roles: ClassVar[tuple[Role, ...]] = (Role("features", "feature_cols", "the columns to learn from", many=True),)
    architectures: ClassVar[tuple[str, ...]] = ("mlp",)
    label_studio_tag: ClassVar[str | None] = None  # a row of numbers has no Label Studio object tag here
    drafted_train: ClassVar[dict[str, Any]] = {
        "hidden": [64, 64],
        "dropout": 0.2,
        "epochs": 60,
        "patience": 8,
        "batch_size": 64,
    }

    def fit_encoder(
        self, train: pd.DataFrame, config: TrainConfig, spec: ModelSpec, columns: Mapping[str, Any]
    ) -> FittedEncoder:
        self.check_columns(columns)
        tabular = fit_tabular(train, list(columns["feature_cols"]))
        spec.n_features = tabular.n_features
        return FittedEncoder({"tabular": tabular.to_dict()})

    def encode(
        self,
        df: pd.DataFrame,
        *,
        architecture: str,
        features: Mapping[str, Any],
        columns: Mapping[str, Any],
        tokenizer: Any,
    ) -> EncodedInputs:
        return TensorInputs(encode_tabular(df, TabularSpec.from_dict(features["tabular"])))

    def build_network(self, spec: ModelSpec, *, initialise: bool) -> nn.Module:
        from tasks.models import TabularMLP

        return TabularMLP(spec)

    def onnx_example(self, spec: ModelSpec, features: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"features": torch.zeros(2, spec.n_features)}

    def onnx_inputs(self, inputs: EncodedInputs, spec: ModelSpec) -> dict[str, np.ndarray]:
        assert isinstance(inputs, TensorInputs)
        return {"features": inputs.tensors[0].numpy()}

    def duplicate_keys(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> list[Any]:
        """A hash of the row's features rounded to `split.feature_decimals` (`neardup.hash_rows`)."""
        from tasks.neardup import hash_rows

        return list(hash_rows(df, columns["feature_cols"], decimals=settings.feature_decimals))


TABULAR = register_modality(TabularModality())
