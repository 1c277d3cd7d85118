"""Flow tests: shrunken end-to-end runs against the real services (Prefect test server, MLflow on SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.home import Home

REPO = Path(__file__).resolve().parents[2]
# Config fields naming files in the repository, made absolute in a test's copy of a config.
_REPO_PATHS = (
    ("expectations", "raw_suite"),
    ("expectations", "clean_suite"),
    ("annotation", "gold"),
    ("annotation", "label_config"),
)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a shrunken copy of a bundled pipeline config, with overrides, into the test's folder.

    Keys are `section__field`; relative suite paths are made absolute against the repository.
    """

    def _make(base: str = "rotten_tomatoes_labelled", **overrides: Any) -> Path:
        raw = yaml.safe_load((REPO / "configs" / f"{base}.yaml").read_text())
        for dotted, value in overrides.items():
            node = raw
            *parents, leaf = dotted.split("__")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        path = tmp_path / f"{base}-test-{len(list(tmp_path.glob('*-test-*.yaml')))}.yaml"  # one file per call
        for section, key in _REPO_PATHS:  # the copy lives outside the repository
            value = (raw.get(section) or {}).get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                raw[section][key] = str(REPO / value)
        path.write_text(yaml.safe_dump(raw))
        return path

    return _make
