"""The servable MLflow text generator: prompts in, their continuations out.

Logged as "model from code" beside `serving.py` (the classifier): executed when the model loads,
it needs only this file, the `tasks/` modules carried as code paths, and the directory `save_lm`
wrote (model, tokenizer, generation settings). Input: a frame with a `prompt` column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SluiceGenerator(PythonModel):
    """Wraps a `tasks.generation_model.TextGenerator` (greedy, hence the same text every time, at temperature 0)."""

    def load_context(self, context: Any) -> None:
        from tasks.generation_model import TextGenerator  # resolved from the model's code paths

        self._generator = TextGenerator.load(Path(context.artifacts["generator"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "prompt" not in frame.columns:
            raise ValueError(f"the generator reads a column 'prompt'; the input has columns {list(frame.columns)}")
        prompts = frame["prompt"].astype(str).tolist()
        return pd.DataFrame({"prompt": prompts, "text": self._generator.generate(prompts)})


mlflow.models.set_model(SluiceGenerator())
