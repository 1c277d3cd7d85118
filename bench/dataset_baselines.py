"""The bundled real data sets through the whole pipeline, against scikit-learn baselines fitted on the same split.

For each config (`configs/<name>.yaml`, as `sluice init` drafted it and then tuned by hand) the Prefect flow
runs end to end (real local Prefect API, GX, MLflow on SQLite) and reports its test metrics. Then, in the
same process, the rows of the split manifest that run wrote train scikit-learn baselines on exactly the
same train split, scored on exactly the same test split with the same metric code (`tasks.evaluate`):
TF-IDF + logistic regression for text, logistic regression for tabular features (scaled) and for images
(raw pixels, scaled), and a majority-class floor for all. Prints each, and the ratio sluice / baseline.

    .venv/bin/python bench/dataset_baselines.py [amazon_reviews seattle_weather mnist_digits]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = ("amazon_reviews", "seattle_weather", "mnist_digits")


def _config(name: str, folder: Path) -> Path:
    """The repository's config, with suite paths made absolute (the copy lives outside the repository)."""
    raw = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    raw["train"]["progress"] = False
    for key in ("raw_suite", "clean_suite"):
        raw["expectations"][key] = str(REPO / raw["expectations"][key])
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def split_frames(result: dict[str, Any], home: Path) -> dict[str, pd.DataFrame]:
    """The rows the run trained, validated and tested on, from its snapshot and its split manifest."""
    data = pd.read_parquet(home / "snapshots" / result["snapshot_id"] / "data.parquet")
    manifest = pd.read_parquet(home / "splits" / f"{result['split_manifest_hash'][:16]}.parquet")
    rows = data.merge(manifest[["item_id", "split"]], on="item_id")
    return {name: rows[rows["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}


def _inputs(config: Any, frame: pd.DataFrame) -> Any:
    """What a baseline reads: the text, the feature matrix, or the flattened pixels."""
    from PIL import Image

    if config.columns.text:
        return frame[config.columns.text].fillna("").astype(str)
    if config.columns.image:
        return np.stack(
            [np.asarray(Image.open(path), dtype=np.float32).ravel() for path in frame[config.columns.image]]
        )
    return pd.get_dummies(frame[config.columns.features], dtype=float).to_numpy()


def _proba(model: Any, inputs: Any, classes: list[str]) -> np.ndarray:
    """Class probabilities in the pipeline's class order (0 for a class the baseline never saw)."""
    proba = np.zeros((len(inputs), len(classes)))
    proba[:, [classes.index(c) for c in model.classes_]] = model.predict_proba(inputs)
    return proba


def fit_baselines(config: Any, frames: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Each baseline's test metrics, fitted on the train split."""
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tasks.evaluate import evaluate_predictions

    classes = config.labels.classes
    label = config.labels.column
    y_train = frames["train"][label].astype(str)
    y_test = frames["test"][label].astype(str).to_numpy()
    if config.columns.text:
        name = "tf-idf + logistic regression"
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), LogisticRegression(max_iter=2000)
        )
    else:
        name = "logistic regression" + (" on pixels" if config.columns.image else "")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    x_train, x_test = _inputs(config, frames["train"]), _inputs(config, frames["test"])
    majority = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_train), 1)), y_train)
    return {
        name: evaluate_predictions(y_test, _proba(model.fit(x_train, y_train), x_test, classes), classes),
        "majority class": evaluate_predictions(y_test, _proba(majority, np.zeros((len(y_test), 1)), classes), classes),
    }


def _line(name: str, metrics: dict[str, float]) -> str:
    return f"  {name:<32} accuracy {metrics['accuracy']:.3f}  f1_macro {metrics['f1_macro']:.3f}"


def bench_dataset(name: str, base: Path) -> None:
    """One data set: the pipeline, the baselines on its split, the ratios."""
    from flows.pipeline import pipeline
    from sluice.config import load_config

    config_path = _config(name, base)
    config = load_config(config_path)
    started = time.perf_counter()
    result = pipeline(config_path=str(config_path), home=str(base / "home"))
    seconds = time.perf_counter() - started
    frames = split_frames(result, base / "home")
    baselines = fit_baselines(config, frames)

    sizes = ", ".join(f"{k} {len(v)}" for k, v in frames.items())
    print(f"{name}: {result['rows']['rows_in']} rows, split {config.split.strategy} ({sizes}), {seconds:.0f} s")
    sluice_metrics = result["test_metrics"]
    print(_line(f"sluice {config.train.architecture} (v{result['model_version']})", sluice_metrics))
    for baseline, metrics in baselines.items():
        print(_line(baseline, metrics))
    for baseline, metrics in baselines.items():
        ratio = sluice_metrics["f1_macro"] / metrics["f1_macro"] if metrics["f1_macro"] else float("inf")
        print(f"  ratio f1_macro sluice / {baseline}: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", help=f"any of {', '.join(DATASETS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown data sets {unknown}; choose from {', '.join(DATASETS)}")

    base = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{base / 'mlflow.db'}"
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    os.environ["MPLCONFIGDIR"] = str(base / "mpl")

    from prefect.testing.utilities import prefect_test_harness

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with prefect_test_harness(server_startup_timeout=300):  # a shared 2-core machine can take minutes
        for name in args.datasets or DATASETS:
            bench_dataset(name, base)


if __name__ == "__main__":
    main()
