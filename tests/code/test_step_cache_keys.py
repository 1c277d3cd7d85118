"""The cache keys of the cached steps change exactly when what their stage reads changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from flows import steps
from sluice.config import ColumnsConfig
from tasks.clean import CleanConfig
from tasks.labels import LabelsConfig
from tasks.split import SplitConfig


class _Home:
    def __init__(self, root: Path) -> None:
        self.root, self.splits = root, root / "splits"


class _Snapshot:
    snapshot_id = "snap-1"


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"item_id": ["a", "b"], "text": ["x", "y"]})


def test_clean_key_follows_its_sections_and_the_modality() -> None:
    base: dict[str, Any] = {
        "settings": CleanConfig(),
        "columns": ColumnsConfig(text="text"),
        "modality": "text_classification",
        "dataset": "d",
        "data": _frame(),
    }
    key = steps._key_clean(None, base)
    assert key == steps._key_clean(None, dict(base, dataset="other"))  # the name reaches no result
    assert key != steps._key_clean(None, dict(base, columns=ColumnsConfig(text="body")))
    assert key != steps._key_clean(None, dict(base, modality="tabular_classification"))
    assert key != steps._key_clean(None, dict(base, data=_frame().iloc[:1]))


def test_validate_keys_follow_the_suite_file(tmp_path: Path) -> None:
    suite = tmp_path / "raw.json"
    suite.write_text("{}")
    raw: dict[str, Any] = {
        "columns": ColumnsConfig(text="text"),
        "labels": LabelsConfig(column="label", classes=["a", "b"]),
        "suite": suite,
        "dataset": "d",
        "home": _Home(tmp_path),
        "snapshot": _Snapshot(),
    }
    clean: dict[str, Any] = {"suite": suite, "dataset": "d", "home": _Home(tmp_path), "data": _frame()}
    before = steps._key_validate_raw(None, raw), steps._key_validate_clean(None, clean)
    assert before == (steps._key_validate_raw(None, dict(raw)), steps._key_validate_clean(None, dict(clean)))
    assert steps._key_validate_raw(None, dict(raw, suite=None)) != before[0]
    relabelled = LabelsConfig(column="label", classes=["a", "c"])
    assert steps._key_validate_raw(None, dict(raw, labels=relabelled)) != before[0]
    suite.write_text('{"changed": true}')
    assert steps._key_validate_raw(None, raw) != before[0]
    assert steps._key_validate_clean(None, clean) != before[1]


def test_split_key_follows_the_split_section_and_the_holdout(tmp_path: Path) -> None:
    params: dict[str, Any] = {
        "settings": SplitConfig(),
        "columns": ColumnsConfig(text="text"),
        "holdout": None,
        "dataset": "d",
        "home": _Home(tmp_path),
        "data": _frame(),
    }
    key = steps._key_split(None, params)
    assert key == steps._key_split(None, dict(params))
    assert key != steps._key_split(None, dict(params, settings=SplitConfig(seed=SplitConfig().seed + 1)))
    holdout = tmp_path / "holdout.csv"
    holdout.write_text("item_id\na\n")
    assert key != steps._key_split(None, dict(params, holdout=holdout))
