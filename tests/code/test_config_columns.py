"""Pipeline config: each column role is set once, under `columns:`, and the split reads it from there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice.config import ConfigError, parse_config
from tasks.columns import LABEL


def _raw(**sections: Any) -> dict[str, Any]:
    return {
        "name": "reviews",
        "source": {"path": "reviews.csv"},
        "labels": {"source": "column", "column": "y", "classes": ["pos", "neg"]},
        "registry": {"model_name": "m"},
    } | sections


def test_a_group_split_needs_only_columns_group(tmp_path: Path) -> None:
    config = parse_config(
        _raw(columns={"text": "body", "group": "user", "features": ["n"]}, split={"strategy": "group"}),
        base_dir=tmp_path,
    )
    split = config.split
    assert (split.group_col, split.text_col, split.feature_cols, split.label_col) == ("user", "body", ("n",), LABEL)
    # The dumped config reads back the same (a Prefect deployment passes it as a dict).
    again = parse_config(config.model_dump(mode="json"), base_dir=tmp_path)
    assert again.split == split and again.columns == config.columns


def test_an_older_config_that_set_the_role_under_split_still_reads(tmp_path: Path) -> None:
    config = parse_config(_raw(split={"strategy": "temporal", "time_col": "posted"}), base_dir=tmp_path)
    assert config.columns.time == "posted" and config.split.time_col == "posted"
    same = parse_config(
        _raw(columns={"group": "user"}, split={"strategy": "group", "group_col": "user"}), base_dir=tmp_path
    )
    assert same.split.group_col == "user"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"split": {"strategy": "group"}}, r"split.strategy is 'group', which needs columns.group: the column whose"),
        ({"split": {"strategy": "temporal"}}, r"needs columns.time: the timestamp column"),
        (
            {"columns": {"group": "user"}, "split": {"strategy": "group", "group_col": "account"}},
            r"split.group_col is 'account' but columns.group is 'user'; .* remove split.group_col",
        ),
        ({"split": {"label_col": "y"}}, r"split.label_col is 'y', but the split stratifies on the resolved labels"),
        (
            {"tuning": {"cross_validate": True}, "split": {"folds": 0}},
            r"tuning.cross_validate is true but split.folds is 0; set split.folds",
        ),
    ],
)
def test_a_role_set_twice_or_missing_is_a_config_error_naming_the_fields(
    tmp_path: Path, sections: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(**sections), base_dir=tmp_path, path=tmp_path / "reviews.yaml")
