"""A saved text generator behind two calls, `load(dir)` and `generate(prompts)`, for serving.

MLflow-independent on purpose: a pyfunc model-from-code file (written where the MLflow client
lives) only has to call `TextGenerator.load(context.artifacts[...])` in `load_context` and
`generate` in `predict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.generation import CausalLM, GenerationConfig, generate_texts, load_lm, read_saved_config
from tasks.train import choose_device


@dataclass
class TextGenerator:
    """A causal LM saved by `tasks.generation.save_lm`, with the sampling settings saved next to it."""

    lm: CausalLM
    config: GenerationConfig

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> TextGenerator:
        """The model, tokenizer and generation settings in `directory`, on `device` (auto: CUDA when available)."""
        config = read_saved_config(directory)
        return cls(load_lm(directory, device=choose_device(device)), config)

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """The continuation of each prompt; greedy (the same text every time) when temperature is 0."""
        return generate_texts(self.lm, prompts, self.config)
