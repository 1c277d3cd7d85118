"""Content fingerprints: cache keys and idempotency keys are built from what went in, never from time."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
_CODE_DIRS = ("tasks", "flows", "sluice")


@functools.cache
def code_version() -> str:
    """A hash of the project's Python sources: changes with any edit, committed or not."""
    digest = hashlib.sha256()
    for folder in _CODE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(REPO_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def package_versions() -> str:
    """A hash of every installed distribution and its version: a new torch or pandas trains another model."""
    from importlib.metadata import distributions

    pins = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in distributions() if d.metadata["Name"]})
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()[:16]


def file_hash(path: Path | None) -> str:
    """sha256 of a file's bytes ("-" for no file, "missing" for a path that is not there)."""
    if path is None:
        return "-"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


def frame_hash(frame: pd.DataFrame) -> str | None:
    """Content hash of a DataFrame (values, index, column names); None when a cell cannot be hashed."""
    try:
        rows = pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()
    except TypeError:  # lists or arrays in cells: no stable hash, no caching
        return None
    return hashlib.sha256(rows + json.dumps([str(c) for c in frame.columns]).encode()).hexdigest()[:16]


def combine(*parts: object) -> str:
    """One key from several parts."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:24]
