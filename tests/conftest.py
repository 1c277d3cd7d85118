"""Root fixtures: every test runs against a throwaway project home, never the user's `.sluice/`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.postgres"]
if (Path(__file__).parent / "fixtures" / "labelstudio.py").is_file():
    pytest_plugins.append("tests.fixtures.labelstudio")

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module imports Prefect: keep its home (and everything else) out of $HOME."""
    base = Path(tempfile.mkdtemp(prefix="sluice-tests-"))
    os.environ["SLUICE_TEST_BASE"] = str(base)
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    # A developer's team databases stay out of the tests: every service is on SQLite unless a test says so.
    for name in ("SLUICE_PREFECT_DATABASE_URL", "SLUICE_MLFLOW_DATABASE_URL", "SLUICE_LABELSTUDIO_DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ["SLUICE_HOME"] = str(base / "home")
    # Nothing a test runs may write to the user's $HOME: point it, and the XDG folders, at the temp dir.
    os.environ["HOME"] = str(base / "user-home")
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        os.environ[name] = str(base / name.lower())
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "1"


# The files that take longest, longest first: pytest-xdist hands out whole files in collection order, and
# the run ends when its last file does, so these start first and the many short files fill the gaps.
_LONG_FILES = (
    "tests/flow/test_postgres.py",
    "tests/flow/test_cli_errors.py",
    "tests/flow/test_resume.py",
    "tests/flow/test_annotation.py",
    "tests/flow/test_deployments.py",
    "tests/flow/test_annotators.py",
    "tests/flow/test_registry.py",
    "tests/flow/test_cli_run.py",
    "tests/flow/test_dask.py",
    "tests/flow/test_browser.py",
    "tests/flow/test_init_datasets.py",
    "tests/code/test_distributed.py",
    "tests/code/test_train.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long files first, then the other service tests, then tests/code (a stable sort: order within a file holds)."""

    def rank(item: pytest.Item) -> int:
        path = item.path.resolve().relative_to(REPO_ROOT).as_posix() if item.path.is_relative_to(REPO_ROOT) else ""
        if path in _LONG_FILES:
            return _LONG_FILES.index(path)
        return len(_LONG_FILES) + (1 if path.startswith("tests/code/") else 0)

    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test writes to $HOME or reaches outside hosts."""
    base = tmp_path_factory.mktemp("env")
    os.environ.setdefault("MPLCONFIGDIR", str(base / "matplotlib"))
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["GIT_PYTHON_REFRESH"] = "quiet"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
