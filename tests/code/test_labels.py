from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.columns import ITEM_ID, LABEL
from tasks.labels import LabelError, LabelsConfig, labels_from_annotation, labels_from_column


def _frame() -> pd.DataFrame:
    return pd.DataFrame({ITEM_ID: ["a", "b", "c", "d"], "category": ["fresh", "plot", None, "rotten"]})


def test_column_labels_quarantine_unknown_and_hold_missing() -> None:
    outcome = labels_from_column(
        _frame(), LabelsConfig(source="column", column="category", classes=["fresh", "rotten"])
    )
    assert outcome.data[LABEL].tolist() == ["fresh", "rotten"]
    assert outcome.awaiting[ITEM_ID].tolist() == ["c"]
    assert outcome.quarantine[ITEM_ID].tolist() == ["b"]
    reason = outcome.quarantine["reason"].iloc[0]
    assert 'label "plot" (column category) is not one of the classes fresh, rotten' in reason
    assert len(outcome.data) + len(outcome.awaiting) + len(outcome.quarantine) == 4


def test_annotation_labels_come_from_consensus() -> None:
    consensus = pd.DataFrame({ITEM_ID: ["a", "d"], "label": ["rotten", "fresh"]})
    outcome = labels_from_annotation(
        _frame(), consensus, LabelsConfig(source="annotation", classes=["fresh", "rotten"])
    )
    assert dict(zip(outcome.data[ITEM_ID], outcome.data[LABEL], strict=True)) == {
        "a": "rotten",
        "d": "fresh",
    }
    assert sorted(outcome.awaiting[ITEM_ID]) == ["b", "c"]


def test_missing_label_column_is_named() -> None:
    with pytest.raises(LabelError, match=r'label column "stars" \(labels.column\) is missing'):
        labels_from_column(_frame(), LabelsConfig(source="column", column="stars", classes=["a", "b"]))


def test_config_needs_a_column_for_column_source() -> None:
    with pytest.raises(ValidationError, match="labels.column is not set"):
        LabelsConfig(source="column", classes=["a", "b"])
