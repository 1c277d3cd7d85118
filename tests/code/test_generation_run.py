"""The generation run's pure pieces: training to a saved generator with samples, prompts, the ceiling gate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tasks.generation import GenerationConfig
from tasks.generation_model import TextGenerator
from tasks.generation_run import GenerationResult, decide_generation, sample_prompts, train_generator

TINY = GenerationConfig(
    tiny_layers=1, tiny_heads=2, tiny_embd=32, tiny_vocab_size=300, epochs=1, batch_size=8, block_size=32,
    max_new_tokens=6, seed=3, max_perplexity=1000.0,
)  # fmt: skip


def _frame(rows: int) -> pd.DataFrame:
    nouns, verbs = ["the film", "a plot", "this actor"], ["shines", "drags", "works"]
    return pd.DataFrame({"text": [f"{nouns[i % 3]} {verbs[i // 3 % 3]} in scene {i % 7}." for i in range(rows)]})


def _result(perplexity: float) -> GenerationResult:
    return GenerationResult(Path("."), "cpu", [], perplexity, ["a | b"], ["c\nd"])


def test_train_generator_saves_a_generator_that_repeats_its_samples(tmp_path: Path) -> None:
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster for a model this small
    frames = {"train": _frame(40), "val": _frame(10), "test": _frame(12).iloc[5:]}
    result = train_generator(TINY, frames, tmp_path / "generator")
    assert len(result.history) == 1 and 1.0 < result.test_perplexity < 1000.0
    assert result.prompts == [" ".join(t.split()[:3]) for t in frames["test"]["text"].head(5)]
    assert TextGenerator.load(result.model_dir, device="cpu").generate(result.prompts) == result.samples


def test_prompts_are_the_first_words_of_non_blank_test_texts() -> None:
    test = pd.DataFrame({"text": ["  ", None, "one two three four", "five"]})
    assert sample_prompts(test, TINY, n=5) == ["one two three", "five"]


@pytest.mark.parametrize(
    ("perplexity", "approval", "promote", "awaits"),
    [(20.0, "auto", True, False), (2000.0, "auto", False, False), (20.0, "manual", True, True)],
)
def test_the_gate_is_the_perplexity_ceiling(perplexity: float, approval: str, promote: bool, awaits: bool) -> None:
    decision = decide_generation(TINY, _result(perplexity), approval)  # type: ignore[arg-type]
    assert (decision.promote, decision.awaits_review) == (promote, awaits)
    assert [c.name for c in decision.checks] == ["perplexity"]


def test_samples_table_escapes_pipes_and_newlines() -> None:
    assert _result(1.5).samples_markdown().splitlines()[-1] == "| a \\| b | c d |"
