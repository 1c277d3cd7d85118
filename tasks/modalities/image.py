"""Images: one column of arrays or file paths; a small CNN; perceptual-hash near duplicates."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.featurize import EncodedInputs, ImageSpec, TensorInputs, encode_images, fit_images
from tasks.modalities import register_modality
from tasks.modalities.base import DuplicateSettings, Edges, FittedEncoder, Modality, Role, require_columns

if TYPE_CHECKING:
    from tasks.models import ModelSpec
    from tasks.train import TrainConfig


class ImageModality(Modality):
    name: ClassVar[str] = "image"
    roles: ClassVar[tuple[Role, ...]] = (Role("image", "image_col", "the column holding image arrays or paths"),)
    architectures: ClassVar[tuple[str, ...]] = ("cnn",)
    label_studio_tag: ClassVar[str | None] = "Image"
    drafted_train: ClassVar[dict[str, Any]] = {"channels": [16, 32], "epochs": 15, "patience": 3, "batch_size": 64}

    def _column(self, columns: Mapping[str, Any]) -> str:
        return str(columns.get("image_col"))

    def fit_encoder(
        self, train: pd.DataFrame, config: TrainConfig, spec: ModelSpec, columns: Mapping[str, Any]
    ) -> FittedEncoder:
        self.check_columns(columns)
        require_columns(train, [self._column(columns)])
        image = fit_images(train[self._column(columns)].tolist())
        spec.in_channels = image.channels
        return FittedEncoder({"image": image.to_dict()})

    def encode(
        self,
        df: pd.DataFrame,
        *,
        architecture: str,
        features: Mapping[str, Any],
        columns: Mapping[str, Any],
        tokenizer: Any,
    ) -> EncodedInputs:
        return TensorInputs(encode_images(df[self._column(columns)].tolist(), ImageSpec.from_dict(features["image"])))

    def build_network(self, spec: ModelSpec, *, initialise: bool) -> nn.Module:
        from tasks.models import ImageCNN

        return ImageCNN(spec)

    def onnx_example(self, spec: ModelSpec, features: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        image = ImageSpec.from_dict(dict(features["image"]))
        return {"images": torch.zeros(2, image.channels, image.height, image.width)}

    def onnx_inputs(self, inputs: EncodedInputs, spec: ModelSpec) -> dict[str, np.ndarray]:
        assert isinstance(inputs, TensorInputs)
        return {"images": inputs.tensors[0].numpy()}

    def duplicate_keys(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> list[Any]:
        """The image's perceptual hash (`neardup.hash_image`): equal for identical and near-identical images."""
        from tasks.neardup import hash_image

        return [hash_image(img) for img in df[self._column(columns)]]

    def duplicate_edges(self, df: pd.DataFrame, columns: Mapping[str, Any], settings: DuplicateSettings) -> Edges:
        """Images whose perceptual hashes differ in at most `split.image_max_distance` bits."""
        from tasks.neardup import as_edges, find_image_duplicates

        images = list(df[self._column(columns)])
        return as_edges(find_image_duplicates(images, max_distance=settings.image_max_distance))

    def task_data(self, value: Any) -> Any:
        """An image path as text (Label Studio shows it by URL or local-files path); arrays cannot be shown."""
        if isinstance(value, str | Path):
            return str(value)
        raise ValueError(
            "Label Studio shows images from a path or URL; this image column holds arrays: write the images to "
            "files and put their paths in the column"
        )


IMAGE = register_modality(ImageModality())
