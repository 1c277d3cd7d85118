from __future__ import annotations

import pandas as pd
import pytest

from tasks.clean import CleanConfig, MissingPolicy, OutlierRule, clean_frame, normalize_text


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{n}" for n in range(8)],
            "text": ["Cafe\u0301  good", "Café good", "  bad\tmovie ", None, "", "ok", "fine", "meh"],
            "score": [1.0, 2.0, 3.0, 4.0, 5.0, None, 6.0, 1000.0],
        }
    )


def test_normalize_text_nfc_and_whitespace() -> None:
    assert normalize_text(pd.Series(["Cafe\u0301  good\n", None])).tolist()[0] == "Café good"


def test_every_removed_row_is_quarantined_with_step_and_reason() -> None:
    config = CleanConfig(
        normalize_text=["text"],
        missing={"text": MissingPolicy(action="drop"), "score": MissingPolicy(action="impute", strategy="median")},
        dedupe_on=["text"],
        outliers=[OutlierRule(column="score", method="iqr", k=3.0)],
    )
    result = clean_frame(_frame(), config)
    q = result.quarantine.set_index("item_id")
    assert result.rows_in == result.rows_kept + result.rows_quarantined == 8
    assert q.loc["i3", "step"] == "missing" and 'missing value in "text"' in q.loc["i3", "reason"]
    assert q.loc["i4", "step"] == "missing"  # empty after normalisation counts as missing
    assert q.loc["i1", "step"] == "dedupe" and "duplicate of item i0" in q.loc["i1", "reason"]
    assert q.loc["i7", "step"] == "outliers"
    assert result.imputed == {"score": 1}
    # median of the scores still present after the missing-text rows left: 1, 2, 3, 6, 1000
    assert result.data.set_index("item_id").loc["i5", "score"] == pytest.approx(3.0)
    # the quarantined row keeps its original content
    assert '"text": "meh"' in q.loc["i7", "row"]


def test_zscore_and_constant_impute() -> None:
    df = pd.DataFrame({"item_id": list("abcdefghij"), "x": [1, 2, 1, 2, 1, 2, 1, 2, 1, 50], "y": [None] + ["k"] * 9})
    result = clean_frame(
        df,
        CleanConfig(
            missing={"y": MissingPolicy(action="impute", value="unknown")},
            dedupe_on=[],
            outliers=[OutlierRule(column="x", method="zscore", k=2.5)],
        ),
    )
    assert result.quarantine["item_id"].tolist() == ["j"]
    assert result.data["y"].iloc[0] == "unknown"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (CleanConfig(normalize_text=["body"]), r'column "body" named in clean.normalize_text is missing'),
        (CleanConfig(missing={"text": MissingPolicy(action="impute")}), r"imputes a constant but gives no value"),
        (CleanConfig(outliers=[OutlierRule(column="text")]), r"has no numeric values"),
    ],
)
def test_config_errors_name_the_setting(config: CleanConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clean_frame(_frame(), config)


def test_a_missing_dedupe_key_neither_crashes_nor_merges_unrelated_rows() -> None:
    df = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e"],
            "text": ["same", None, float("nan"), "same", ""],
            "source": ["web", "app", "app", "web", "app"],
        }
    )
    result = clean_frame(df, CleanConfig(dedupe_on=["text", "source"]))
    assert result.quarantine["item_id"].tolist() == ["d"]
    assert result.quarantine["reason"].tolist() == ["exact duplicate of item a on text, source"]
    assert result.data["item_id"].tolist() == ["a", "b", "c", "e"]
