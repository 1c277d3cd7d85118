"""Data tests: expectation suites and splits run on the real bundled data files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.home import Home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")
