"""The servable MLflow model: raw rows in, labels and class probabilities out.

MLflow logs this file as "model from code": it is executed when the model loads,
so serving needs only this file, the `tasks/` inference modules carried as code
paths, and the predictor's weights. Nothing of the training code path is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SluiceModel(PythonModel):
    """Wraps a `tasks.predictor.Predictor`, which holds the preprocessing and the network."""

    def load_context(self, context: Any) -> None:
        from tasks.predictor import Predictor  # resolved from the model's code paths

        self._predictor = Predictor.load(Path(context.artifacts["predictor"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        proba = self._predictor.predict_proba(frame)
        classes = list(self._predictor.classes)
        out = pd.DataFrame(proba, columns=[f"proba_{c}" for c in classes])
        out.insert(0, "label", [classes[i] for i in proba.argmax(axis=1)])
        return out


mlflow.models.set_model(SluiceModel())
