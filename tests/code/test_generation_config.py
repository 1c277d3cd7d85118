"""The generation config path: train.task generation, labels.source none, a generation section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice.config import ConfigError, load_config, parse_config
from tasks.columns import ITEM_ID
from tasks.labels import labels_absent

ROOT = Path(__file__).resolve().parents[2]


def _raw(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "gen",
        "source": {"path": "data.csv"},
        "columns": {"text": "review", "group": "movie"},
        "labels": {"source": "none"},
        "split": {"strategy": "group"},
        "train": {"task": "generation"},
        "generation": {"max_perplexity": 50.0},
        "registry": {"model_name": "gen"},
    }
    return raw | changes


def test_the_demo_generation_config_loads_unstratified_with_the_text_column() -> None:
    config = load_config(ROOT / "configs" / "rotten_tomatoes_generation.yaml")
    assert config.train.task == "generation" and config.generation is not None
    assert config.split.label_col is None and config.split.group_col == "movie_name"
    assert config.generation.text_column == "text" and config.labels.classes == []


def test_a_generation_config_needs_no_labels_section() -> None:
    raw = _raw()
    del raw["labels"]
    config = parse_config(raw, base_dir=ROOT)
    assert config.labels.source == "none" and config.split.label_col is None


def test_generation_text_column_comes_from_columns_text() -> None:
    config = parse_config(_raw(), base_dir=ROOT)
    assert config.generation is not None and config.generation.text_column == "review"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"labels": {"source": "column", "column": "y", "classes": ["a", "b"]}}, "labels.source 'none'"),
        ({"train": {"task": "text"}}, "labels.source 'none'"),
        ({"generation": None}, "needs a generation section"),
        ({"generation": {"text_column": "other"}}, "columns.text"),
        ({"labels": {"source": "column", "column": "y"}, "train": {"task": "text"}}, "at least 2 classes"),
    ],
)
def test_inconsistent_generation_configs_name_the_setting(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_config(_raw(**changes), base_dir=ROOT)


def test_labels_absent_passes_every_row_on_without_a_label() -> None:
    import pandas as pd

    rows = pd.DataFrame({ITEM_ID: ["a", "b"], "review": ["good", "bad"]})
    outcome = labels_absent(rows)
    assert list(outcome.data[ITEM_ID]) == ["a", "b"] and outcome.quarantine.empty and outcome.awaiting.empty
    assert outcome.distribution() == {}


def test_the_generation_modality_has_no_roles_and_joins_no_duplicates() -> None:
    import pandas as pd

    from tasks.modalities import DuplicateSettings, get_modality, modality_names

    generation = get_modality("generation")
    assert "generation" in modality_names() and generation.roles == () and generation.label_studio_tag is None
    rows = pd.DataFrame({"text": ["same", "same"]})
    settings = DuplicateSettings(near_duplicates="none")
    assert generation.duplicate_edges(rows, {"text_col": "text"}, settings).shape == (0, 2)


def test_the_training_key_of_a_generation_config_sees_its_generation_section() -> None:
    from flows.pipeline import training_key

    def key(**generation: Any) -> str:
        config = parse_config(_raw(generation={"max_perplexity": 50.0, **generation}), base_dir=ROOT)
        return training_key(config, snapshot_id="s", labels="none", code="c", split_manifest="m")

    assert key() == key() and key(epochs=2) != key() and key(temperature=0.5) != key()
