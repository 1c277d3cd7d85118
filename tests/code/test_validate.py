from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.validate import ExpectationGateError, SuiteFileError, load_suite, validate_frame


def _suite(tmp_path: Path, expectations: list[dict[str, object]]) -> Path:
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "tiny", "expectations": expectations}))
    return path


FRAME = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d"],
        "text": ["good film", "x", "bad film", None],
        "label": ["pos", "neg", "neg", "pos"],
    }
)


def test_row_level_expectation_quarantines_instead_of_failing(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        [
            {
                "type": "expect_column_value_lengths_to_be_between",
                "kwargs": {"column": "text", "min_value": 3},
                "meta": {"row_level": True},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "text"}, "meta": {"row_level": True}},
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": ["pos", "neg"]}},
        ],
    )
    kept, outcome = validate_frame(FRAME, suite, gx_root=tmp_path / "gx", asset="t", where="test data")
    assert kept["item_id"].tolist() == ["a", "c"]
    q = outcome.quarantine.set_index("item_id")
    assert "expect_column_value_lengths_to_be_between" in q.loc["b", "reason"]
    assert "expect_column_values_to_not_be_null" in q.loc["d", "reason"]
    assert outcome.success  # the final verdict is on the kept rows
    assert outcome.data_docs and Path(outcome.data_docs.removeprefix("file://")).is_file()
    assert len(kept) + len(outcome.quarantine) == len(FRAME)


def test_hard_failure_names_each_expectation_and_its_bad_rows(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        [
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "label", "value_set": ["pos"]}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "text"}},
        ],
    )
    with pytest.raises(ExpectationGateError) as caught:
        validate_frame(FRAME, suite, gx_root=tmp_path / "gx", asset="t", where="test data")
    message = str(caught.value)
    assert 'expect_column_values_to_be_in_set("label"): 2 bad rows' in message
    assert 'expect_column_values_to_not_be_null("text"): 1 bad rows' in message


def test_suite_naming_a_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    suite = _suite(tmp_path, [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "review"}}])
    with pytest.raises(SuiteFileError, match=r'column "review" is missing from test data; expected by .*suite.json'):
        validate_frame(FRAME, suite, gx_root=tmp_path / "gx", asset="t", where="test data")


def test_missing_or_malformed_suite_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteFileError, match="does not exist"):
        load_suite(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SuiteFileError, match="not valid JSON"):
        load_suite(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "expectation",
    [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 10}},
        {"type": "expect_column_unique_value_count_to_be_between", "kwargs": {"column": "label", "min_value": 3}},
    ],
    ids=["table-level", "aggregate"],
)
def test_row_level_expectation_that_names_no_rows_fails_the_gate(tmp_path: Path, expectation: dict[str, Any]) -> None:
    # Marked row-level, a table or aggregate expectation quarantines nothing: it must not pass the gate either.
    suite = _suite(tmp_path, [expectation | {"meta": {"row_level": True}}])
    with pytest.raises(ExpectationGateError) as caught:
        validate_frame(FRAME, suite, gx_root=tmp_path / "gx", asset="t", where="test data")
    message = str(caught.value)
    assert expectation["type"] in message and "names no rows to quarantine" in message
    assert caught.value.outcome.quarantine.empty  # nothing was quarantined on its account
