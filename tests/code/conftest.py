"""Code tests: pure functions on tiny in-memory data; no services."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.home import Home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")
