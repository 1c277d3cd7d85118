"""What a kind of data (a modality) tells the rest of sluice: the one interface each modality module fills in.

Serving imports this package through `tasks.predictor`: it depends only on the standard library, numpy,
pandas and torch at import time. Anything heavier (scipy for near duplicates, the leakage report,
transformers) is imported inside the method that needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import nn

from tasks.featurize import EncodedInputs

if TYPE_CHECKING:
    from tasks.leakage import LeakageCheck
    from tasks.models import ModelSpec
    from tasks.train import TrainConfig

Edges = npt.NDArray[np.int64]  # shape (m, 2): pairs of row positions


@dataclass(frozen=True)
class Role:
    """A column role a modality reads: its `columns:` field and the keyword the training code takes it as."""

    field: str  # ColumnsConfig field, e.g. "text"
    keyword: str  # train_model / Predictor keyword and predictor.json key, e.g. "text_col"
    what: str  # for errors: "the column holding the texts"
    many: bool = False  # a list of columns (tabular features) rather than one


@dataclass(frozen=True)
class DuplicateSettings:
    """The split's duplicate settings a modality's near-duplicate key needs (tasks.split.SplitConfig's)."""

    near_duplicates: str = "minhash"
    near_duplicate_threshold: float = 0.8
    image_max_distance: int = 6
    audio_max_distance: int = 2
    feature_decimals: int = 6


@dataclass
class FittedEncoder:
    """An encoder fitted on the training rows: its saved form (`features`, JSON-able) and a tokenizer if any."""

    features: dict[str, Any]
    tokenizer: Any = None


class Modality:
    """One kind of data. Subclass it in `tasks/modalities/<name>.py` and `register_modality` an instance.

    Class attributes:
        name: the `train.task` value that selects it.
        roles: the `columns:` roles it reads (the first is the one annotators see).
        architectures: the `train.architecture` names it trains; "auto" picks the first.
        label_studio_tag: the Label Studio object tag that shows an item, or None when it cannot be annotated.
        drafted_train: the `train:` settings `sluice init` drafts for this kind of data.
    """

    name: ClassVar[str]
    roles: ClassVar[tuple[Role, ...]]
    architectures: ClassVar[tuple[str, ...]]
    label_studio_tag: ClassVar[str | None] = None
    drafted_train: ClassVar[dict[str, Any]] = {}

    # -- columns -------------------------------------------------------------------------------------------------
    def input_columns(self, columns: Mapping[str, Any]) -> list[str]:
        """The frame columns the model reads, from the role keywords (`{"text_col": "review", ...}`)."""
        out: list[str] = []
        for role in self.roles:
            value = columns.get(role.keyword)
            if role.many:
                out.extend(str(c) for c in value or [])
            else:
                out.append(str(value))
        return out

    def check_columns(self, columns: Mapping[str, Any]) -> None:
        """Raise when a role this modality needs is not set.

        Raises:
            ValueError: naming the role keyword and what it should hold.
        """
        for role in self.roles:
            if not columns.get(role.keyword):
                raise ValueError(f"task={self.name!r} needs {role.keyword}: {role.what}")

    # -- items -------------------------------------------------------------------------------------------------
    def unusable_items(self, df: pd.DataFrame, columns: Mapping[str, Any]) -> list[str | None]:
        """One entry per row: why its item cannot be used (an unreadable file), or None; all usable by default.

        The clean stage quarantines the rows with a reason (step: the modality's name) instead of letting
        training crash on them.
        """
        return [None] * len(df)

    # -- encoding ------------------------------------------------------------------------------------------------
    def fit_encoder(
        self, train: pd.DataFrame, config: TrainConfig, spec: ModelSpec, columns: Mapping[str, Any]
    ) -> FittedEncoder:
        """Fit the featurisation on the training rows; fills in the fields of `spec` that depend on the data."""
        raise NotImplementedError

    def encode(
        self,
        df: pd.DataFrame,
        *,
        architecture: str,
        features: Mapping[str, Any],
        columns: Mapping[str, Any],
        tokenizer: Any,
    ) -> EncodedInputs:
        """Rows as model inputs, with the fitted encoder's saved form (`features`)."""
        raise NotImplementedError

    # -- networks ------------------------------------------------------------------------------------------------
    def build_network(self, spec: ModelSpec, *, initialise: bool) -> nn.Module:
        """The untrained network of `spec.architecture` (one of `architectures`)."""
        raise NotImplementedError

    def initialises_itself(self, architecture: str) -> bool:
        """True where the network comes with its weights (pretrained), so `train.init` does not apply."""
        return False

    def save_extras(self, model: nn.Module, tokenizer: Any, directory: Path) -> None:
        """Write what the network needs besides its state dict (nothing by default)."""

    def load_extras(self, spec: ModelSpec, directory: Path) -> tuple[ModelSpec, Any]:
        """The spec to rebuild the network from a saved directory, and its tokenizer (none by default)."""
        return spec, None

    def saved_spec(self, spec: ModelSpec) -> ModelSpec:
        """The model spec as written into predictor.json (paths made relative to the saved directory)."""
        return spec

    # -- ONNX ----------------------------------------------------------------------------------------------------
    def onnx_example(self, spec: ModelSpec, features: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Named example inputs to trace the network with (two rows)."""
        raise NotImplementedError

    def onnx_inputs(self, inputs: EncodedInputs, spec: ModelSpec) -> dict[str, np.ndarray]:
        """The ONNX model's named inputs for encoded rows."""
        raise NotImplementedError

    def onnx_variable_length(self, architecture: str) -> bool:
        """Whether the inputs' second dimension varies (token or bucket sequences)."""
        return False

    # -- near duplicates and leakage -----------------------------------------------------------------------------
    def duplicate_keys(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> list[Any]:
        """One key per row: rows with equal keys are exact duplicates (None joins nothing)."""
        raise NotImplementedError

    def duplicate_edges(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> Edges:
        """Pairs of row positions the split keeps together: equal keys by default."""
        from tasks.neardup import equal_value_edges  # lazy: scipy is not part of serving

        return equal_value_edges(self.duplicate_keys(df, columns, settings))

    def leakage_checks(
        self, frame: pd.DataFrame, split: npt.NDArray[Any], columns: Mapping[str, Any], *, near_threshold: float | None
    ) -> list[LeakageCheck]:
        """This modality's checks in the leakage report (none by default)."""
        return []

    # -- annotation ----------------------------------------------------------------------------------------------
    def annotation_column(self, columns: Mapping[str, Any]) -> str:
        """The column annotators see (the first role's).

        Raises:
            ValueError: the modality has no Label Studio object tag, or the role is not set.
        """
        role = self.roles[0]
        if self.label_studio_tag is None:
            raise ValueError(
                f"train.task {self.name!r} data cannot be annotated in Label Studio (no object tag shows it); "
                "remove the annotation section or label the rows in a column (labels.source: column)"
            )
        column = columns.get(role.keyword)
        if not column:
            raise ValueError(f"annotation needs columns.{role.field}: {role.what}")
        return str(column)

    def task_data(self, value: Any) -> Any:
        """A cell as Label Studio task data (JSON-able)."""
        return value


def require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise KeyError naming the columns the training frame lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} are missing from the training frame (it has {list(df.columns)})")


def role_columns(modalities: Sequence[Modality], columns: Any) -> dict[str, Any]:
    """Role keyword -> column for every role of `modalities`, read from a `ColumnsConfig` (None or [] unset)."""
    out: dict[str, Any] = {}
    for modality in modalities:
        for role in modality.roles:
            value = getattr(columns, role.field, None)
            out[role.keyword] = (list(value or []) or None) if role.many else value
    return out
