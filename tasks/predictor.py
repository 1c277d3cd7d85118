"""The servable model: raw DataFrame columns in, class probabilities out.

A `Predictor` bundles the network with the fitted featurisation. It saves as a JSON spec plus a
state-dict file (no pickled objects) and loads with `torch.load(weights_only=True)`. This module
imports only the standard library, numpy, pandas, torch and its sibling modules (featurize, models and
the modalities package, which import the same), so a serving process never pulls in the training stack.
What differs between kinds of data (which columns, how they are encoded, the ONNX inputs) the predictor
asks its modality (`tasks.modalities`, chosen by `task`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.featurize import EncodedInputs
from tasks.modalities import Modality, get_modality, registered_modalities
from tasks.models import HashedBagClassifier, ModelSpec, build_model

SPEC_FILE = "predictor.json"
WEIGHTS_FILE = "weights.pt"
FORMAT_VERSION = 1


class Predictor:
    """A trained classifier with its featurisation: `predict_proba(df)` takes the raw input columns."""

    def __init__(
        self,
        model: nn.Module,
        *,
        model_spec: ModelSpec,
        task: str,
        classes: list[str],
        features: dict[str, Any],
        columns: dict[str, Any] | None = None,
        tokenizer: Any = None,
        batch_size: int = 512,
    ) -> None:
        if len(classes) != model_spec.n_classes:
            raise ValueError(f"{len(classes)} classes given but the model has {model_spec.n_classes} outputs")
        self.model = model
        self.model_spec = model_spec
        self.task = task
        self.classes = list(classes)
        self.features = features
        # Role keyword -> column for every registered modality's roles ({"text_col": "review", ...}):
        # predictor.json records them all, as it always has.
        given = columns or {}
        self.columns: dict[str, Any] = {
            role.keyword: (list(given.get(role.keyword) or []) or None) if role.many else given.get(role.keyword)
            for modality in registered_modalities()
            for role in modality.roles
        }
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = torch.device("cpu")

    # -- inputs ----------------------------------------------------------------------------------------------
    @property
    def modality(self) -> Modality:
        return get_modality(self.task)

    @property
    def input_columns(self) -> list[str]:
        """The DataFrame columns `predict_proba` reads."""
        return self.modality.input_columns(self.columns)

    @property
    def architecture(self) -> str:
        return self.model_spec.architecture

    def encode(self, df: pd.DataFrame) -> EncodedInputs:
        """Featurise a frame into model inputs (on CPU)."""
        missing = [c for c in self.input_columns if c not in df.columns]
        if missing:
            raise KeyError(
                f"columns {missing} are missing from the frame (it has {list(df.columns)}); "
                f"this model reads {self.input_columns}"
            )
        return self.modality.encode(
            df, architecture=self.architecture, features=self.features, columns=self.columns, tokenizer=self.tokenizer
        )

    # -- inference -------------------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> Predictor:
        """Move the network to `device` (inputs follow batch by batch)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def logits(self, inputs: EncodedInputs, batch_size: int | None = None) -> torch.Tensor:
        """Raw scores (n x n_classes, float32, CPU) for encoded inputs."""
        size = batch_size or self.batch_size
        self.model.eval()
        out: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(inputs), size):
                rows = torch.arange(start, min(start + size, len(inputs)))
                args = tuple(t.to(self.device) for t in inputs.take(rows))
                out.append(self.model(*args).float().cpu())
        if not out:
            return torch.zeros((0, len(self.classes)))
        return torch.cat(out)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Class probabilities (n x n_classes, float64), columns in `classes` order."""
        return torch.softmax(self.logits(self.encode(df)).double(), dim=1).numpy()

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """The most probable class name per row."""
        proba = self.predict_proba(df)
        return (
            np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)] if len(proba) else np.asarray([], dtype=object)
        )

    # -- persistence -----------------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The JSON-able description that, with the weights, rebuilds this predictor."""
        return {
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "classes": self.classes,
            **self.columns,
            "features": self.features,
            "model": self.modality.saved_spec(self.model_spec).to_dict(),
            "batch_size": self.batch_size,
            "torch_version": torch.__version__,
        }

    def save(self, directory: Path) -> None:
        """Write `predictor.json` and `weights.pt` (a state dict of tensors) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SPEC_FILE).write_text(json.dumps(self.spec(), indent=2))
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        self.modality.save_extras(self.model, self.tokenizer, directory)

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> Predictor:
        """Rebuild a saved predictor; weights load with `weights_only=True` (no code runs from the file)."""
        directory = Path(directory)
        for name in (SPEC_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{directory / name} is missing; a saved predictor directory holds {SPEC_FILE} and "
                    f"{WEIGHTS_FILE} (written by Predictor.save)"
                )
        spec = json.loads((directory / SPEC_FILE).read_text())
        if spec.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory / SPEC_FILE} has format_version {spec.get('format_version')}; this code reads "
                f"{FORMAT_VERSION}: retrain or load it with the matching sluice version"
            )
        model_spec, tokenizer = get_modality(spec["task"]).load_extras(ModelSpec.from_dict(spec["model"]), directory)
        model = build_model(model_spec, initialise=False)
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.eval()
        predictor = cls(
            model,
            model_spec=model_spec,
            task=spec["task"],
            classes=spec["classes"],
            features=spec["features"],
            columns=spec,  # the role columns (text_col, ...) are top-level keys of the spec
            tokenizer=tokenizer,
            batch_size=int(spec.get("batch_size", 512)),
        )
        return predictor.to(device)

    # -- ONNX ------------------------------------------------------------------------------------------------
    def export_onnx(self, path: Path) -> Path:
        """Export the network (not the featurisation) to ONNX with a dynamic batch dimension.

        Inputs by architecture: hashed_bag `ids` (n, length) int64 bucket ids padded with
        `model_spec.n_buckets` (build them with `featurize.hash_texts` + `featurize.bags_to_padded`);
        mlp `features` (n, n_features) float32; cnn `images` (n, C, H, W) float32; transformer
        `input_ids`, `attention_mask` (n, length) int64. Output: `logits` (n, n_classes).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        example = self._onnx_example()
        module: nn.Module = _PaddedBag(self.model) if isinstance(self.model, HashedBagClassifier) else self.model
        names = list(example)
        axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in names}
        if self.modality.onnx_variable_length(self.architecture):
            for n in names:
                axes[n][1] = "length"
        axes["logits"] = {0: "batch"}
        module = module.to("cpu").eval()
        # The TorchScript exporter: the dynamo one needs onnxscript, which the serving stack does not carry.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # Tracing notes every Python branch on a tensor; the parity tests cover the shapes that matter.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                module,
                tuple(example.values()),
                str(path),
                input_names=names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        self.model.to(self.device)
        return path

    def onnx_inputs(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """The ONNX model's inputs for a frame (for onnxruntime's `session.run(None, inputs)`)."""
        return self.modality.onnx_inputs(self.encode(df), self.model_spec)

    def _onnx_example(self) -> dict[str, torch.Tensor]:
        return self.modality.onnx_example(self.model_spec, self.features)


class _PaddedBag(nn.Module):
    """The hashed-bag network over a padded id matrix: EmbeddingBag offsets do not export cleanly."""

    def __init__(self, model: HashedBagClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.forward_padded(ids)
