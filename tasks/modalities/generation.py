"""Generation: a causal language model fine-tuned on the text column (`tasks/generation.py`).

It is a `train.task` value, not a classifier: the pipeline hands its splits to the generation stage
instead of `train_model`, so none of the encoder, network or ONNX hooks apply. It has no role of its
own: the text column is `columns.text`, whose duplicates the text modality keys for every config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from tasks.modalities import register_modality
from tasks.modalities.base import DuplicateSettings, Edges, Modality, Role


class GenerationModality(Modality):
    name: ClassVar[str] = "generation"
    roles: ClassVar[tuple[Role, ...]] = ()
    architectures: ClassVar[tuple[str, ...]] = ("causal_lm",)
    label_studio_tag: ClassVar[str | None] = None  # the text is the signal: nothing to annotate

    def duplicate_edges(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> Edges:
        return np.empty((0, 2), dtype=np.int64)  # the text modality joins the text column's duplicates


GENERATION = register_modality(GenerationModality())
