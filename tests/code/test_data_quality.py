"""The Datalab data-quality report finds planted duplicates and label flips, and skips sets too small to judge."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

from tasks.columns import ITEM_ID, LABEL
from tasks.data_quality import DataQualityConfig, find_data_issues
from tasks.label_quality import Inputs

CLASSES = ["negative", "positive"]
FEATURES = tuple(f"x{i}" for i in range(6))


def _planted(n: int = 400, seed: int = 3) -> tuple[pd.DataFrame, set[str], set[str]]:
    """make_classification rows with 4 exact copies of other rows and 5 % of the labels flipped."""
    x, y = make_classification(n, len(FEATURES), n_informative=4, class_sep=2.0, random_state=seed)
    rng = np.random.default_rng(seed)
    copies = rng.choice(n, size=8, replace=False)
    x[copies[4:]] = x[copies[:4]]
    y[copies[4:]] = y[copies[:4]]
    flips = rng.choice(np.setdiff1d(np.arange(n), copies), size=n // 20, replace=False)
    y[flips] = 1 - y[flips]
    frame = pd.DataFrame(x, columns=list(FEATURES)).assign(
        **{ITEM_ID: [f"r{i:03d}" for i in range(n)], LABEL: np.asarray(CLASSES)[y]}
    )
    return frame, {f"r{i:03d}" for i in copies}, {f"r{i:03d}" for i in flips}


def test_datalab_finds_planted_duplicates_and_label_flips() -> None:
    frame, copies, flips = _planted()
    report = find_data_issues(frame, CLASSES, Inputs(feature_cols=FEATURES), DataQualityConfig(top=50))

    assert report.skipped is None and report.rows == len(frame)
    assert set(report.summary["issue_type"]) == {"label", "outlier", "near_duplicate", "class_imbalance", "non_iid"}
    # every planted copy and its original are near duplicates of each other, named by item id
    dupes = report.top["near_duplicate"]
    assert copies <= set(dupes[ITEM_ID])
    assert all(set(row.duplicates.split(", ")) & copies for row in dupes.itertuples() if row.item_id in copies)
    # most flipped labels are flagged, and most flagged rows are flips
    flagged = set(report.issues.loc[report.issues["label_issue"], ITEM_ID])
    assert len(flagged & flips) >= 0.7 * len(flips)
    assert len(flagged & flips) >= 0.5 * len(flagged)
    top_label = report.top["label"]
    assert set(top_label["given"]) <= set(CLASSES) and (top_label["given"] != top_label["suggested"]).all()
    # balanced classes, rows in no particular order: neither is flagged
    assert report.count("class_imbalance") == 0 and report.count("non_iid") == 0
    markdown = report.to_markdown()
    assert "| near_duplicate | " in markdown and "#### label: top" in markdown and sorted(copies)[0] in markdown


def test_datalab_reads_text_through_tfidf_and_samples_large_sets() -> None:
    rng = np.random.default_rng(0)
    truth = rng.choice(CLASSES, 120)
    words = {"negative": ["dull", "awful", "tedious"], "positive": ["great", "lovely", "moving"]}
    text = [" ".join([*rng.choice(words[t], 3), *rng.choice(["film", "plot", "scene", "actor"], 3)]) for t in truth]
    for i in range(0, 20, 2):  # ten snippets repeated word for word
        text[i + 1], truth[i + 1] = text[i], truth[i]
    frame = pd.DataFrame({ITEM_ID: [f"t{i:03d}" for i in range(120)], "text": text, LABEL: truth})

    report = find_data_issues(frame, CLASSES, Inputs(text_col="text"), DataQualityConfig(max_rows=100, top=100))

    assert report.rows == 100 and len(report.issues) == 100
    dupes = report.top["near_duplicate"]
    pairs = {(f"t{i:03d}", f"t{i + 1:03d}") for i in range(0, 20, 2)}
    assert any(a in set(dupes[ITEM_ID]) and b in set(dupes[ITEM_ID]) for a, b in pairs)
    assert set(dupes["preview"]) <= set(text)


def test_datalab_skips_a_set_too_small_to_judge() -> None:
    frame, _, _ = _planted(n=40)
    report = find_data_issues(frame.head(20), CLASSES, Inputs(feature_cols=FEATURES), DataQualityConfig())
    assert report.skipped is not None and "20 labelled rows" in report.skipped
    assert "Skipped" in report.to_markdown()
    images = find_data_issues(frame, CLASSES, Inputs(), DataQualityConfig())  # image data: no columns to read
    assert images.skipped is not None and "columns.features" in images.skipped
